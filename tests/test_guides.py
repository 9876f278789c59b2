import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harmonic_jax import guides
from tests import references

PUBLISHED_CVPPP = guides.ORIGINAL_CVPPP


class SineTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_matches_float64_reference(self):
        params = guides.init_sine(jax.random.PRNGKey(0), 5)
        for stride, offset, frame in [(1, (0, 0), None), (2, (3, 5), (20, 30)), (4, (1, 0), None)]:
            fn = self.variant(
                lambda p, o, s=stride, f=frame: guides.sine(p, 13, 17, stride=s, offset=o, frame=f)
            )
            got = fn(params, jnp.asarray(offset, jnp.float32))
            want = references.sine_maps(params, 13, 17, stride, offset, frame)
            chex.assert_shape(got, (math.ceil(13 / stride), math.ceil(17 / stride), 5))
            chex.assert_type(got, jnp.float32)
            np.testing.assert_allclose(got, want, atol=2e-5)

    @chex.variants(with_jit=True, without_jit=True)
    def test_tile_sees_the_full_image_values(self):
        params = guides.init_sine(jax.random.PRNGKey(1), 4)
        full = guides.sine(params, 40, 48, frame=(40, 48))
        tile = self.variant(lambda o: guides.sine(params, 16, 20, offset=o, frame=(40, 48)))(
            jnp.asarray([8, 12], jnp.float32)
        )
        np.testing.assert_allclose(tile, full[8:24, 12:32], atol=1e-5)
        # A stride-4 decoder map holds the full-resolution values at every fourth pixel.
        coarse = guides.sine(params, 40, 48, stride=4, frame=(40, 48))
        np.testing.assert_allclose(coarse, full[::4, ::4], atol=1e-5)


def test_first_column_is_x():
    params = jnp.asarray([[math.pi / 2, 0.0, 0.0]], jnp.float32)  # sin(pi/2 * x / W)
    maps = guides.sine(params, 3, 4)
    np.testing.assert_allclose(maps[0, :, 0], np.sin(np.pi / 2 * np.arange(4) / 4), atol=1e-6)
    np.testing.assert_allclose(maps[:, 0, 0], 0.0, atol=1e-6)


def test_from_original_reproduces_the_original_maps():
    for height, width in [(448, 448), (530, 500)]:
        ours = guides.sine(guides.from_original(PUBLISHED_CVPPP, height, width), height, width)
        want = references.original_maps(PUBLISHED_CVPPP, height, width)
        np.testing.assert_allclose(ours, want, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2, 4, 8])
def test_original_family_is_the_originals_linspace_at_every_scale(stride):
    """The original recomputes linspace(0, 1, h) on each feature map; the "original" family and
    from_original(stride=s) give those maps on the stride-s grid of the frame."""
    frame = (448, 384)
    h, w = frame[0] // stride, frame[1] // stride
    want = references.original_maps(PUBLISHED_CVPPP, h, w)
    fam = guides.get_family("original")
    got = fam.maps(jnp.asarray(PUBLISHED_CVPPP), *frame, stride=stride, offset=(0, 0), frame=frame)
    chex.assert_shape(got, (h, w, 12))
    np.testing.assert_allclose(got, want, atol=2e-5)
    converted = guides.from_original(PUBLISHED_CVPPP, *frame, stride=stride)
    np.testing.assert_allclose(guides.sine(converted, *frame, stride=stride), want, atol=2e-5)
    # A tile at a stride-aligned offset sees the frame's values (unlike the original itself).
    tile = jax.jit(lambda o: fam.maps(jnp.asarray(PUBLISHED_CVPPP), 64, 96, stride=stride,
                                      offset=o, frame=frame))(jnp.asarray([32.0, 64.0]))
    np.testing.assert_allclose(tile, want[32 // stride:(32 + 64) // stride,
                                          64 // stride:(64 + 96) // stride], atol=2e-5)
    with pytest.raises(ValueError, match="must exceed the stride"):
        guides.from_original(PUBLISHED_CVPPP, 8, 448, stride=8)


def test_init_sine_ranges():
    params = np.asarray(guides.init_sine(jax.random.PRNGKey(3), 4000, max_freq=50.0))
    assert params.shape == (4000, 3) and params.dtype == np.float32
    assert 0 <= params[:, :2].min() and params[:, :2].max() <= 50
    assert 0 <= params[:, 2].min() and params[:, 2].max() <= 2 * np.pi
    assert abs(params[:, :2].mean() - 25) < 1.0  # uniform, not clustered at a bound


def test_coord_family_is_coordconv():
    maps = guides.get_family("coord").maps(None, 6, 8, stride=2, offset=(0, 0), frame=None)
    chex.assert_shape(maps, (3, 4, 2))
    np.testing.assert_allclose(maps[..., 0], np.tile(np.arange(0, 8, 2) / 8, (3, 1)))
    np.testing.assert_allclose(maps[..., 1], np.tile((np.arange(0, 6, 2) / 6)[:, None], (1, 4)))


@pytest.mark.parametrize("bad", [np.zeros((4, 2)), np.zeros(3), np.zeros((2, 3, 1))])
def test_bad_params_shape(bad):
    with pytest.raises(ValueError, match=r"params must have shape \(N, 3\)"):
        guides.sine(bad, 4, 4)


def test_bad_grid_and_registry_errors():
    params = guides.init_sine(jax.random.PRNGKey(0), 2)
    with pytest.raises(ValueError, match="stride must be a positive int"):
        guides.sine(params, 4, 4, stride=0)
    with pytest.raises(ValueError, match="unknown guide family 'nope'"):
        guides.get_family("nope")
    with pytest.raises(ValueError, match="already registered with other functions"):
        guides.register_family("sine", guides.get_family("coord"))
    with pytest.raises(ValueError, match=r"sins must have shape \(N, 3\)"):
        guides.from_original(np.zeros((3, 2)), 10, 10)


def test_register_family_again_from_a_rerun_cell():
    def cell():  # a notebook cell: each run makes new function objects of the same names
        def my_maps(params, height, width, *, stride=1, offset=(0, 0), frame=None):
            return guides.sine(params, height, width, stride=stride, offset=offset, frame=frame)

        def my_init(key, n):
            return guides.init_sine(key, n)

        return guides.register_family("rerun_test", guides.GuideFamily(my_init, my_maps))

    first, second = cell(), cell()
    assert first.maps is not second.maps and guides.get_family("rerun_test") is second


def test_shipped_guides_by_name_and_config_path(tmp_path, monkeypatch):
    assert "cvppp_a1" in guides.shipped_guides()
    by_name, meta = guides.load_guides("cvppp_a1")
    monkeypatch.chdir(tmp_path)  # no checkout here: configs/guides/... falls back to the package
    by_path, _ = guides.load_guides("configs/guides/cvppp_a1.json")
    np.testing.assert_array_equal(by_name, by_path)
    assert meta["family"] == "sine" and by_name.shape == (12, 3)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        guides.load_guides("configs/guides/no_such_guides.json")


def test_save_and_load_guides(tmp_path):
    params = guides.init_sine(jax.random.PRNGKey(0), 3)
    guides.save_guides(tmp_path / "g.json", params, family="sine", frame=[10, 12])
    loaded, meta = guides.load_guides(tmp_path / "g.json")
    np.testing.assert_allclose(loaded, params)
    assert meta == {"family": "sine", "frame": [10, 12]}
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        guides.load_guides(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        guides.load_guides(tmp_path / "missing.json")


def test_shipped_bbbc010_guides_are_the_original_converted():
    from pathlib import Path

    params, meta = guides.load_guides(
        Path(__file__).resolve().parents[1] / "configs/guides/bbbc010_original.json")
    np.testing.assert_allclose(params, guides.from_original(guides.ORIGINAL_C_ELEGANS, 448, 448))
    assert meta["frame"] == [448, 448] and meta["command"].startswith("python -c")
