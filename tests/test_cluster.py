import jax
import numpy as np
import pytest
from sklearn.cluster import MeanShift
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from harmonic_jax import cluster, embedding, guides, metrics
from harmonic_jax.data import resize_sample
from harmonic_jax.data.synthetic import touching_blobs


def _blob_image(seed, n_points=24 * 25, centers=5, dim=4, std=0.08):
    points, _ = make_blobs(n_points, n_features=dim, centers=centers, cluster_std=std,
                           center_box=(-1.5, 1.5), random_state=seed)
    return points.astype(np.float32).reshape(24, 25, dim)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_clustering_as_sklearn(seed):
    emb = _blob_image(seed)
    flat = emb.reshape(-1, emb.shape[-1])
    reference = MeanShift(bandwidth=0.5, bin_seeding=True).fit(flat)
    modes = cluster.mean_shift_modes(flat, 0.5)
    np.testing.assert_allclose(
        np.sort(modes, axis=0), np.sort(reference.cluster_centers_, axis=0), atol=1e-4
    )
    # Before the connected-component split, every pixel sits in sklearn's cluster.
    ours = np.argmin(((flat[:, None] - modes[None]) ** 2).sum(-1), axis=1)
    assert adjusted_rand_score(reference.labels_, ours) == 1.0


def test_periodic_twins_are_split_into_components():
    emb = np.zeros((10, 90, 3), np.float32)
    emb[2:8, 2:8] = [1.0, 0.0, 0.0]
    emb[2:8, 80:88] = [1.0, 0.0, 0.0]  # far away (farther than the default max_gap), same value
    emb[2:8, 10:16] = [0.0, 1.0, 0.0]
    labels = cluster.mean_shift(emb, bandwidth=0.5, mask=np.linalg.norm(emb, axis=-1) > 0)
    assert labels.dtype == np.int32 and labels.max() == 3
    assert len({labels[4, 4], labels[4, 84], labels[4, 12]}) == 3
    assert (labels[np.linalg.norm(emb, axis=-1) == 0] == 0).all()


def test_min_size_absorbs_touching_fragments_and_drops_isolated_ones():
    emb = np.zeros((10, 10, 2), np.float32)
    emb[:, :5] = [1.0, 0.0]
    emb[0, 9] = [1.0, 0.0]  # a stray pixel of the first cluster inside the second
    labels = cluster.mean_shift(emb, min_size=2)
    assert labels.max() == 2 and labels[0, 9] == labels[0, 8] != labels[0, 0]
    assert cluster.mean_shift(emb, min_size=0, max_gap=0).max() == 3  # a one-pixel instance
    emb[0, 9] = [0.0, 0.0]
    emb[9, 9] = [5.0, 5.0]  # a one-pixel cluster of its own...
    mask = np.ones((10, 10), bool)
    mask[8:, 8] = mask[8, 9] = False  # ...that touches no other instance: dropped
    labels = cluster.mean_shift(emb, mask=mask, min_size=2)
    assert labels.max() == 2 and labels[9, 9] == 0


def test_fragment_joins_the_neighbour_it_touches_most():
    labels = np.zeros((10, 20), np.int32)
    labels[:, :11] = 1
    labels[:, 11:] = 2
    labels[:4, 10] = 3  # 4 px: touches 1 on its left and below, 2 on its right
    labels[8, 15] = 1  # a stray pixel of 1 inside 2
    parts = cluster.split_components(labels, min_size=5)
    assert parts.max() == 2
    assert (parts[:4, 10] == parts[0, 0]).all() and parts[8, 15] == parts[0, 19]
    # Chains: a fragment that touches only another fragment follows it into the big neighbour.
    chain = np.zeros((10, 16), np.int32)
    chain[:, :10] = 1
    chain[:2, 10:12] = 3  # touches 1
    chain[:2, 12:14] = 4  # touches only 3
    parts = cluster.split_components(chain, min_size=5)
    assert parts.max() == 1 and (parts[:2, :14] == 1).all()


def test_absorbed_stray_pixel_never_joins_two_clusters():
    # Clusters A and B 4 px apart; one stray A pixel touches B from below. Bridging gaps of up to
    # 6 px must not make A and B one instance through that pixel.
    labels = np.zeros((14, 24), np.int32)
    labels[2:9, 2:10] = 1  # A
    labels[2:9, 14:20] = 2  # B
    labels[9, 16] = 1  # stray A pixel below B
    parts = cluster.split_components(labels, min_size=2, max_gap=6)
    assert parts.max() == 2 and parts[4, 4] != parts[4, 16]
    assert parts[9, 16] == parts[4, 16]  # absorbed by B, the part it touches
    # The same through mean_shift, where the bug lived (its fill path).
    emb = np.zeros((*labels.shape, 2), np.float32)
    emb[labels == 1], emb[labels == 2] = [1.0, 0.0], [0.0, 1.0]
    out = cluster.mean_shift(emb, mask=labels > 0, min_size=2, max_gap=6)
    assert out.max() == 2 and out[9, 16] == out[4, 16] != out[4, 4]


def test_split_components_bridges_small_gaps():
    labels = np.zeros((12, 40), np.int32)
    labels[2:8, 2:10] = 4
    labels[2:8, 14:20] = 4  # 4 px from the first part: one occluded object
    labels[2:8, 34:38] = 4  # 14 px further: a periodic twin
    labels[9:11, 2:4] = 9
    parts = cluster.split_components(labels, min_size=0, max_gap=6)
    assert parts[4, 4] == parts[4, 16] != parts[4, 35]
    assert parts.max() == 3 and parts[10, 3] == 3
    assert cluster.split_components(labels, min_size=0, max_gap=0).max() == 4  # 8-connected
    assert cluster.split_components(labels, min_size=30, max_gap=6).max() == 1  # 84 px kept


def test_dropped_speck_never_bridges_twins():
    # Two parts of one cluster 80 px apart (twins) and a one-pixel speck of it half-way: the
    # speck touches nothing, is dropped, and must not chain the twins across two 40 px gaps.
    labels = np.zeros((20, 100), np.int32)
    labels[5:15, :10] = labels[5:15, 90:] = 1
    labels[10, 50] = 1
    parts = cluster.split_components(labels, min_size=8, max_gap=48)
    assert parts.max() == 2 and parts[10, 50] == 0


def test_largest_cluster_as_background():
    rng = np.random.default_rng(4)
    emb = np.zeros((20, 20, 3))
    emb[2:6, 2:6] = [2.0, 0, 0]
    emb[10:15, 3:9] = [0, 2.0, 0]
    emb = (emb + rng.normal(0, 0.02, emb.shape)).astype(np.float32)
    labels = cluster.mean_shift(emb, min_size=0, largest_is_background=True)
    assert np.all(labels[(emb[..., :2] < 1).all(-1)] == 0)  # the big zero cluster
    assert len(np.unique(labels[2:6, 2:6])) == 1 and len(np.unique(labels[10:15, 3:9])) == 1
    assert set(np.unique(labels)) == {0, 1, 2}
    assert cluster.mean_shift(np.zeros((4, 4, 2), np.float32), mask=np.zeros((4, 4), bool),
                              largest_is_background=True).max() == 0


def test_empty_and_zero_size_inputs():
    assert cluster.split_components(np.zeros((0, 0), np.int32)).shape == (0, 0)
    assert cluster.mean_shift(np.zeros((0, 4, 3), np.float32)).shape == (0, 4)
    assert cluster.split_components(np.zeros((3, 3), np.int32)).max() == 0


def test_empty_mask_and_bad_input():
    emb = np.zeros((4, 5, 3), np.float32)
    np.testing.assert_array_equal(cluster.mean_shift(emb, mask=np.zeros((4, 5), bool)), 0)
    with pytest.raises(ValueError, match="bandwidth must be a positive number"):
        cluster.mean_shift(emb, bandwidth=0.0)
    with pytest.raises(ValueError, match=r"embeddings must be \(H, W, N\)"):
        cluster.mean_shift(emb[0])
    with pytest.raises(ValueError, match="mask shape"):
        cluster.mean_shift(emb, mask=np.ones((5, 4), bool))
    emb[1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cluster.mean_shift(emb)
    # A NaN outside the mask is never looked at.
    mask = np.ones((4, 5), bool)
    mask[1, 1] = False
    assert cluster.mean_shift(emb, mask=mask).max() == 1


def test_recovers_real_leaves_from_noisy_embeddings(cvppp_samples, cvppp_guides):
    params, meta = cvppp_guides
    sample = cvppp_samples[0]
    maps = guides.sine(params, *sample.labels.shape, frame=tuple(meta["frame"]))
    target = np.asarray(embedding.target_embedding(maps, sample.labels))
    noisy = target + np.random.default_rng(0).normal(0, 0.05, target.shape).astype(np.float32)
    labels = cluster.mean_shift(noisy, mask=sample.labels > 0, min_size=20)
    assert metrics.sbd(labels, sample.labels) > 0.95
    assert abs(metrics.dic(labels, sample.labels)) <= 1


def _noisy_targets(params, labels, frame, sigma):
    maps = guides.sine(params, *labels.shape, frame=frame)
    target = np.asarray(embedding.target_embedding(maps, labels))
    return target + np.random.default_rng(0).normal(0, sigma, target.shape).astype(np.float32)


def _sklearn_instances(emb, mask):
    """sklearn's clusters of the masked pixels, through the same split as ours."""
    clusters = np.zeros(mask.shape, np.int32)
    clusters[mask] = 1 + MeanShift(bandwidth=0.5, bin_seeding=True).fit_predict(emb[mask])
    return cluster.split_components(clusters, min_size=cluster.MIN_SIZE, max_gap=cluster.MAX_GAP)


@pytest.mark.parametrize("sigma", [0.05, 0.1])
def test_subsampled_path_matches_sklearn_on_crowded_blobs(sigma):
    """More pixels than max_samples: modes on a subsample plus the recovery round for small
    objects, against sklearn's MeanShift over every pixel (~9,000 pixels, 74 touching blobs)."""
    labels = touching_blobs(0, (128, 128), count=(40, 80))
    mask = labels > 0
    assert mask.sum() > 2 * 4096
    emb = _noisy_targets(guides.init_sine(jax.random.PRNGKey(0), 12), labels, (256, 256), sigma)
    ours = cluster.mean_shift(emb, mask=mask)
    assert metrics.sbd(ours, _sklearn_instances(emb, mask)) >= 0.99


def test_subsampled_path_matches_sklearn_on_a_real_plant(cvppp_samples, cvppp_guides):
    params, meta = cvppp_guides
    sample = resize_sample(cvppp_samples[0], 0.5)
    mask = sample.labels > 0
    emb = _noisy_targets(params, sample.labels, tuple(f // 2 for f in meta["frame"]), 0.1)
    ours = cluster.mean_shift(emb, mask=mask, max_samples=1024)
    assert mask.sum() > 4 * 1024
    assert metrics.sbd(ours, _sklearn_instances(emb, mask)) >= 0.99
