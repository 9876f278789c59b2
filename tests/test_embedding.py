import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harmonic_jax import embedding, guides
from tests import references

PARAMS = guides.init_sine(jax.random.PRNGKey(0), 6)
MAPS = guides.sine(PARAMS, 12, 15)


def _labels(seed, ids=(0, 3, 7, 42)):
    return np.random.default_rng(seed).choice(np.asarray(ids, np.int32), size=(12, 15))


class EmbeddingTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_instance_embeddings_match_reference(self):
        labels = _labels(0)
        fn = self.variant(lambda m, lab: embedding.instance_embeddings(m, lab, max_instances=5))
        got = fn(MAPS, jnp.asarray(labels))
        want = references.instance_embeddings(MAPS, labels)
        chex.assert_shape(got, (5, 6))
        np.testing.assert_allclose(got[:3], want, atol=1e-6)
        np.testing.assert_array_equal(got[3:], 0.0)  # documented padding rows

    @chex.variants(with_jit=True, without_jit=True)
    def test_target_embedding(self):
        labels = _labels(1)
        got = self.variant(lambda m, lab: embedding.target_embedding(m, lab, max_instances=3))(
            MAPS, jnp.asarray(labels)
        )
        want = references.instance_embeddings(MAPS, labels)
        for row, instance in enumerate((3, 7, 42)):
            np.testing.assert_allclose(got[labels == instance], np.broadcast_to(
                want[row], ((labels == instance).sum(), 6)), atol=1e-6)
        np.testing.assert_array_equal(got[labels == 0], 0.0)


def test_without_bound_returns_exactly_k_rows():
    got = embedding.instance_embeddings(MAPS, _labels(2))
    chex.assert_shape(got, (3, 6))
    assert embedding.instance_embeddings(MAPS, np.zeros((12, 15), np.int32)).shape == (0, 6)


def test_empty_label_image_target_is_zero():
    target = embedding.target_embedding(MAPS, np.zeros((12, 15), np.int64))
    np.testing.assert_array_equal(target, 0.0)


@pytest.mark.parametrize(
    "labels, message",
    [
        (np.zeros((12, 15), np.float32), "integer ids"),
        (np.full((12, 15), -1, np.int32), "negative ids"),
        (np.zeros((12, 14), np.int32), "does not match maps"),
        (np.zeros((12,), np.int32), "rank 2"),
    ],
)
def test_bad_labels(labels, message):
    with pytest.raises(ValueError, match=message):
        embedding.instance_embeddings(MAPS, labels)


def test_too_many_instances_for_the_bound():
    with pytest.raises(ValueError, match="more than max_instances=2"):
        embedding.instance_embeddings(MAPS, _labels(3), max_instances=2)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 11), st.integers(0, 14), st.integers(1, 1000))
def test_one_pixel_instance_equals_the_maps_there(row, col, instance_id):
    labels = np.zeros((12, 15), np.int32)
    labels[row, col] = instance_id
    got = embedding.instance_embeddings(MAPS, labels)
    np.testing.assert_allclose(got[0], MAPS[row, col], atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(st.permutations([5, 9, 11, 200]), st.integers(0, 2**16))
def test_relabelling_permutes_rows(new_ids, seed):
    labels = _labels(seed, ids=(0, 1, 2, 3, 4))
    if len(np.unique(labels)) < 5:
        return
    relabelled = np.zeros_like(labels)
    for old, new in zip((1, 2, 3, 4), new_ids):
        relabelled[labels == old] = new
    base = np.asarray(embedding.instance_embeddings(MAPS, labels))
    perm = np.asarray(embedding.instance_embeddings(MAPS, relabelled))
    order = np.argsort(new_ids)  # row r of perm is the old instance order[r] + 1
    np.testing.assert_allclose(perm, base[order], atol=1e-6)


@pytest.mark.parametrize("max_instances", [3, 32, 200])  # repeated minima up to 128, a sort beyond
def test_relabel_matches_numpy_unique(max_instances):
    rng = np.random.default_rng(max_instances)
    labels = rng.choice([0, 0, 5, 9, 17, 230, 231, 4000], size=(2, 24, 20)).astype(np.int32)
    labels[1] += np.arange(20, dtype=np.int32) * (labels[1] > 0)  # many ids in the second image
    labels[1, :3] = 0
    dense, ids = jax.vmap(lambda lab: embedding.relabel(lab, max_instances))(jnp.asarray(labels))
    for lab, got_dense, got_ids in zip(labels, np.asarray(dense), np.asarray(ids)):
        kept = np.unique(lab[lab > 0])[:max_instances]
        want_ids = np.zeros(max_instances, np.int32)
        want_ids[: kept.size] = kept
        np.testing.assert_array_equal(got_ids, want_ids)
        want_dense = np.full(lab.shape, max_instances)
        for k, i in enumerate(kept):
            want_dense[lab == i] = k
        np.testing.assert_array_equal(got_dense, want_dense)
