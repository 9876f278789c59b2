import jax
import jax.numpy as jnp
import numpy as np
import pytest

from harmonic_jax import embedding, guides, train
from harmonic_jax.data.augment import random_view, resample
from tests import distributed_worker

GUIDES = guides.init_sine(jax.random.PRNGKey(0), 12)


def test_embedding_loss_matches_reference():
    rng = np.random.default_rng(0)
    pred, target = rng.normal(size=(2, 5, 6, 4)), rng.normal(size=(2, 5, 6, 4))
    fg = rng.random((2, 5, 6)) > 0.5
    weights = rng.random((2, 5, 6))
    l1 = np.abs(pred - target).sum(-1)
    f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    np.testing.assert_allclose(train.embedding_loss(f32(pred), f32(target)), l1.mean(), rtol=1e-5)
    np.testing.assert_allclose(train.embedding_loss(f32(pred), f32(target), jnp.asarray(fg)),
                               l1[fg].sum() / fg.sum(), rtol=1e-5)
    np.testing.assert_allclose(
        train.embedding_loss(f32(pred), f32(target), jnp.asarray(fg), f32(weights)),
        (l1 * weights)[fg].sum() / fg.sum(), rtol=1e-5)
    assert float(train.embedding_loss(f32(pred), f32(target), jnp.zeros((2, 5, 6), bool))) == 0.0


def test_targets_match_embedding_module():
    labels = np.zeros((2, 16, 16), np.int32)
    labels[0, 2:6, 3:9], labels[0, 9:14, 1:5], labels[1, 4:12, 4:12] = 3, 8, 1
    offsets = jnp.array([[0.0, 0.0], [5.0, 7.0]])
    targets, weights, segments = train.targets_for(
        GUIDES, jnp.asarray(labels), offsets, family="sine", frame=(32, 32), max_instances=4,
        weighting=True)
    for b in range(2):
        maps = guides.sine(GUIDES, 16, 16, offset=offsets[b], frame=(32, 32))
        np.testing.assert_allclose(targets[b], embedding.target_embedding(maps, labels[b]),
                                   atol=1e-6)
    np.testing.assert_allclose(weights[1][labels[1] == 1], 1 / np.log(64), rtol=1e-6)
    assert float(weights[0][labels[0] == 0].max()) == 0.0
    # Segments: k-th smallest id -> k, background -> M.
    expected = np.select([labels == 3, labels == 8, labels == 1], [0, 1, 0], 4)
    np.testing.assert_array_equal(segments, expected)


def test_instances_beyond_the_bound_leave_the_loss_and_background_can_be_an_instance():
    labels = np.zeros((1, 16, 16), np.int32)
    labels[0, 1:5, 1:5], labels[0, 1:5, 8:12], labels[0, 9:14, 2:9] = 5, 6, 7
    args = dict(family="sine", frame=(16, 16), max_instances=2)
    targets, weights, segments = train.targets_for(GUIDES, jnp.asarray(labels),
                                                   jnp.zeros((1, 2)), **args)
    overflow = labels[0] == 7  # the third id with room for two
    assert np.all(np.asarray(segments[0])[overflow] == 3)  # M + 1: out of the loss
    assert float(weights[0][overflow].max()) == 0.0 and float(weights[0][labels[0] == 5].min()) == 1
    # Background as an instance: its target is the mean of the maps over the background.
    targets, weights, segments = train.targets_for(GUIDES, jnp.asarray(labels),
                                                   jnp.zeros((1, 2)), background=True, **args)
    maps = np.asarray(guides.sine(GUIDES, 16, 16, frame=(16, 16)), np.float64)
    bg = labels[0] == 0
    np.testing.assert_allclose(np.asarray(targets[0])[bg], np.broadcast_to(
        maps[bg].mean(0), (bg.sum(), 12)), atol=1e-6)
    assert np.all(np.asarray(segments[0])[bg] == 2) and float(weights[0][bg].min()) == 1.0


def test_pull_loss_matches_float64_loop():
    rng = np.random.default_rng(3)
    pred = rng.normal(size=(2, 6, 7, 3))
    segments = rng.integers(0, 4, (2, 6, 7))  # 0..2 segments, 3 = none
    mask = rng.random((2, 6, 7)) > 0.3
    total, count = 0.0, 0
    for b in range(2):
        for y in range(6):
            for x in range(7):
                if not mask[b, y, x]:
                    continue
                s = segments[b, y, x]
                mean = pred[b][segments[b] == s].mean(0) if s < 3 else np.zeros(3)
                total += np.abs(pred[b, y, x] - mean).sum()
                count += 1
    got = train.pull_loss(jnp.asarray(pred, jnp.float32), jnp.asarray(segments, jnp.int32),
                          jnp.asarray(mask), 3)
    np.testing.assert_allclose(float(got), total / count, rtol=1e-5)
    # Constant predictions per segment: no pull.
    flat = np.take(rng.normal(size=(4, 3)), segments, axis=0)
    assert float(train.pull_loss(jnp.asarray(flat, jnp.float32), jnp.asarray(segments, jnp.int32),
                                 jnp.asarray(segments < 3), 3)) < 1e-6


def test_augmentation_keeps_label_ids_and_tracks_the_offset():
    rng = np.random.default_rng(1)
    labels = np.kron(rng.integers(1, 50, (6, 6)), np.ones((8, 8), np.int64)).astype(np.int32)
    image = np.stack([labels * 3.0] * 3, -1).astype(np.float32)
    for seed in range(5):
        img, lab, offset = random_view(jax.random.PRNGKey(seed), jnp.asarray(image),
                                       jnp.asarray(labels), jnp.array([48, 48]), crop=(32, 32),
                                       scale_range=(0.7, 1.4))
        assert set(np.unique(lab)) <= set(np.unique(labels)) | {0}  # never interpolated
        assert lab.dtype == jnp.int32 and img.shape == (32, 32, 3)
    # Scale 1, no flip: the crop is the slice at the offset.
    img, lab = resample(jnp.asarray(image), jnp.asarray(labels), out_size=(16, 16), scale=1.0,
                        offset=jnp.array([5.0, 9.0]), flip=False, size=jnp.array([48, 48]))
    np.testing.assert_array_equal(lab, labels[5:21, 9:25])
    np.testing.assert_allclose(img, image[5:21, 9:25], atol=1e-4)
    _, flipped = resample(jnp.asarray(image), jnp.asarray(labels), out_size=(48, 48), scale=1.0,
                          offset=jnp.array([0.0, 0.0]), flip=True, size=jnp.array([48, 48]))
    np.testing.assert_array_equal(flipped, labels[:, ::-1])
    # A crop larger than the image pads with background.
    _, padded = resample(jnp.asarray(image), jnp.asarray(labels), out_size=(64, 64), scale=1.0,
                         offset=jnp.array([-8.0, -8.0]), flip=False, size=jnp.array([48, 48]))
    np.testing.assert_array_equal(padded[8:56, 8:56], labels)
    assert int(padded[:8].max()) == 0 and int(padded[:, 56:].max()) == 0


def _batch(n=8, size=40):
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 6, (n, 5, 5)), np.ones((1, 8, 8), np.int64)).astype(np.int32)
    return dict(image=rng.integers(0, 255, (n, size, size, 3)).astype(np.uint8), labels=labels,
                size=np.full((n, 2), size, np.int32))


def test_data_parallel_step_equals_one_device(eight_device_run):
    """3 steps on one device against the same 3 steps over the 8 devices of the data mesh
    (tests/distributed_worker.py: a compact U-Net, a batch of 8, SGD; SGD because Adam divides
    by sqrt(v), which turns the float noise of gradients that are exactly zero in exact
    arithmetic, conv biases before BatchNorm, into full-size steps). The one-device run is also
    compared with the same step compiled with XLA's default scheduler instead of the
    memory-optimised one (the same results), and its BatchNorm statistics must move."""
    assert jax.device_count() == 8, "conftest sets 8 CPU devices"
    model, optimizer, state = distributed_worker.setup()
    batch = distributed_worker.batch()
    step = train.make_train_step(model, optimizer, crop=(32, 32))
    # XLA's default scheduler instead of the memory-optimised one: the same results.
    default_scheduler = train.make_train_step(model, optimizer, crop=(32, 32),
                                              memory_scheduler=False)
    other = jax.tree.map(jnp.copy, state)
    initial_stats = jax.tree.map(np.asarray, state.batch_stats)
    for i in range(distributed_worker.STEPS):
        state, metrics = step(state, train.shard_batch(batch, None))
        other, _ = default_scheduler(other, train.shard_batch(batch, None))
        if i == 0:
            first_one = jax.tree.map(np.asarray, state.params)
    for ours, xlas in zip(jax.tree.leaves(state), jax.tree.leaves(other)):
        # The same operations; only the order of threaded reductions may differ (measured on
        # the default network: losses within 4e-6 (relative) after 4 steps; here equal).
        np.testing.assert_allclose(ours, xlas, rtol=1e-5, atol=1e-6)
    # BatchNorm's running statistics come back out of the rematerialised DoubleConv.
    for new, old in zip(jax.tree.leaves(state.batch_stats), jax.tree.leaves(initial_stats)):
        assert not np.allclose(new, old)
    final = {"one": state, "eight": eight_device_run[0]}
    first = {"one": first_one, "eight": eight_device_run[1]}

    def worst_relative(a, b):
        one, eight = jax.tree.leaves(a), jax.tree.leaves(b)
        scale = max(float(np.abs(p).max()) for p in one)
        return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
                   for x, y in zip(one, eight)) / scale

    # One step: the same update up to float rounding of the 8-device reductions.
    assert worst_relative(first["one"], first["eight"]) <= 1e-6
    # Later steps: XLA sums over 8 devices in another order, and the L1 loss's sign(pred - target)
    # and max-pool's argmax turn those 1e-7 differences into a few step-sized ones (measured with
    # jax 0.10.2: 1.5e-5 after two steps, 3.7e-5 after three).
    assert worst_relative(final["one"].params, final["eight"].params) <= 1e-4
    assert int(final["eight"].step) == 3
    moved = jax.tree.leaves(final["one"].params)[0]
    assert np.isfinite(float(metrics["loss"])) and float(jnp.abs(moved).sum()) > 0
    with pytest.raises(ValueError, match="not divisible by the 8 devices"):
        train.shard_batch(_batch(n=6), train.data_mesh())
