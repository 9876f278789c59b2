import numpy as np
import pytest
from scipy import ndimage
from skimage.morphology import convex_hull_image

from harmonic_jax.data.synthetic import touching_blobs


def test_touching_blobs_are_deterministic_crowded_convex_and_touching():
    labels = touching_blobs(3)
    np.testing.assert_array_equal(labels, touching_blobs(3))
    assert labels.shape == (256, 256) and labels.dtype == np.int32
    ids = np.unique(labels)[1:]
    np.testing.assert_array_equal(ids, np.arange(1, len(ids) + 1))
    assert 50 <= len(ids) <= 300
    sizes = np.bincount(labels.ravel())[1:]
    assert sizes.min() >= 10 and sizes.max() <= 3000
    eight = np.ones((3, 3), bool)
    for i in ids:
        mask = labels == i
        assert ndimage.label(mask, structure=eight)[1] == 1
        # Convex up to pixelisation: the convex hull adds at most a thin rim.
        assert convex_hull_image(mask).sum() - mask.sum() <= 0.25 * mask.sum() + 8
    # Neighbours touch: many blobs share a border with another blob.
    right = (labels[:, 1:] != labels[:, :-1]) & (labels[:, 1:] > 0) & (labels[:, :-1] > 0)
    down = (labels[1:] != labels[:-1]) & (labels[1:] > 0) & (labels[:-1] > 0)
    touching = set(labels[:, 1:][right]) | set(labels[1:][down])
    assert len(touching) > 0.5 * len(ids)


def test_touching_blobs_bad_arguments():
    with pytest.raises(ValueError, match="size must be"):
        touching_blobs(0, (0, 10))
    with pytest.raises(ValueError, match="count"):
        touching_blobs(0, count=(10, 5))
