import numpy as np
import pytest
from sklearn.cluster import MeanShift
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from harmonic_jax import cluster, embedding, guides, metrics


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
    emb = np.zeros((10, 30, 3), np.float32)
    emb[2:8, 2:8] = [1.0, 0.0, 0.0]
    emb[2:8, 20:28] = [1.0, 0.0, 0.0]  # far away, same embedding
    emb[2:8, 10:16] = [0.0, 1.0, 0.0]
    labels = cluster.mean_shift(emb, bandwidth=0.5, mask=np.linalg.norm(emb, axis=-1) > 0)
    assert labels.dtype == np.int32 and labels.max() == 3
    assert len({labels[4, 4], labels[4, 24], labels[4, 12]}) == 3
    assert (labels[np.linalg.norm(emb, axis=-1) == 0] == 0).all()


def test_min_size_drops_small_components():
    emb = np.zeros((10, 10, 2), np.float32)
    emb[:, :5] = [1.0, 0.0]
    emb[0, 9] = [1.0, 0.0]  # a single stray pixel of the first cluster
    dropped = cluster.mean_shift(emb, min_size=2, fill=False)
    assert dropped[0, 9] == 0 and dropped.max() == 2
    filled = cluster.mean_shift(emb, min_size=2)  # the stray pixel joins its neighbour
    assert filled[0, 9] == filled[0, 8] and filled.max() == 2
    assert cluster.mean_shift(emb, min_size=0).max() == 3


def test_split_components_bridges_small_gaps():
    labels = np.zeros((12, 40), np.int32)
    labels[2:8, 2:10] = 4
    labels[2:8, 14:20] = 4  # 4 px from the first part: one occluded object
    labels[2:8, 34:38] = 4  # 14 px further: a periodic twin
    labels[9:11, 2:4] = 9
    parts = cluster.split_components(labels, max_gap=6)
    assert parts[4, 4] == parts[4, 16] != parts[4, 35]
    assert parts.max() == 3 and parts[10, 3] == 3
    assert cluster.split_components(labels).max() == 4  # 8-connected components
    assert cluster.split_components(labels, min_size=30).max() == 2  # 48 and 36 px kept


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
