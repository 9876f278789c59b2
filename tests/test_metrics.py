import numpy as np
import pytest
from pycocotools import mask as mask_utils

from harmonic_jax import metrics
from tests import references


def _random_labels(seed, k=5, shape=(20, 24)):
    return np.random.default_rng(seed).integers(0, k, size=shape).astype(np.int32)


@pytest.mark.parametrize("seed", range(4))
def test_sbd_matches_reference(seed):
    pred, gt = _random_labels(seed), _random_labels(seed + 100, k=4)
    assert metrics.sbd(pred, gt) == pytest.approx(references.sbd(pred, gt), abs=1e-6)


def test_sbd_hand_computed():
    gt = np.zeros((4, 4), np.int32)
    gt[:, :2], gt[:, 2:] = 1, 2
    pred = np.zeros((4, 4), np.int32)
    pred[:, :2] = 5  # matches leaf 1 exactly, misses leaf 2
    # BD(pred, gt) = 1; BD(gt, pred) = (1 + 0) / 2.
    assert metrics.sbd(pred, gt) == pytest.approx(0.5)
    assert metrics.sbd(gt, gt) == 1.0
    assert metrics.sbd(np.zeros_like(gt), np.zeros_like(gt)) == 1.0
    assert metrics.sbd(np.zeros_like(gt), gt) == 0.0
    assert metrics.sbd(gt, np.zeros_like(gt)) == 0.0
    assert metrics.dic(pred, gt) == -1 and metrics.dic(gt, pred) == 1


def test_bad_metric_input():
    with pytest.raises(ValueError, match="does not match"):
        metrics.sbd(np.zeros((3, 3), np.int32), np.zeros((3, 4), np.int32))
    with pytest.raises(ValueError, match="integer ids"):
        metrics.sbd(np.zeros((3, 3), np.float32), np.zeros((3, 3), np.int32))
    with pytest.raises(ValueError, match="iou must be in"):
        metrics.matching(np.zeros((3, 3), np.int32), np.zeros((3, 3), np.int32), iou=0.0)


def test_iou_matrix_matches_pycocotools():
    pred, gt = _random_labels(7), _random_labels(8, k=3)
    pm, gm = metrics.instance_masks(pred), metrics.instance_masks(gt)

    def encode(m):
        return mask_utils.encode(np.asfortranarray(m.transpose(1, 2, 0).astype(np.uint8)))

    want = mask_utils.iou(encode(pm), encode(gm), [0] * len(gm))
    np.testing.assert_allclose(metrics.iou_matrix(pred, gt), want, atol=1e-6)


def test_matching_hand_computed():
    gt = np.zeros((10, 10), np.int32)
    gt[0:4, 0:4], gt[6:10, 6:10], gt[0:2, 8:10] = 1, 2, 3
    pred = np.zeros_like(gt)
    pred[0:4, 0:4] = 9  # IoU 1 with gt 1
    pred[6:10, 6:9] = 4  # IoU 12 / 16 = 0.75 with gt 2
    pred[5, 0:3] = 7  # matches nothing
    result = metrics.matching(pred, gt, iou=0.5)
    assert (result["tp"], result["fp"], result["fn"]) == (2, 1, 1)
    assert result["precision"] == pytest.approx(2 / 3) and result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 / 3)
    assert result["mean_matched_iou"] == pytest.approx((1 + 0.75) / 2)
    assert metrics.matching(pred, gt, iou=0.8)["tp"] == 1
    empty = metrics.matching(np.zeros_like(gt), np.zeros_like(gt))
    assert empty["f1"] == 1.0 and empty["tp"] == 0


def test_coco_ap_hand_computed():
    gt = np.zeros((10, 10), np.int32)
    gt[0:5, 0:10] = 1  # 50 px
    pred = np.zeros_like(gt)
    pred[0:5, 0:8] = 3  # IoU 40 / 50 = 0.8
    result = metrics.coco_ap([pred], [gt])
    # Matched at IoU thresholds 0.50 ... 0.80 (7 of 10): AP = 0.7 (101-point interpolation).
    assert result["AP50"] == pytest.approx(1.0) and result["AP75"] == pytest.approx(1.0)
    assert result["AP"] == pytest.approx(0.7)
    assert result["APS"] == pytest.approx(0.7) and result["APM"] == -1.0
    perfect = metrics.coco_ap([gt, gt], [gt, gt])
    assert perfect["AP"] == pytest.approx(1.0)


def test_coco_ap_with_overlapping_masks_and_scores():
    gt = np.zeros((2, 12, 12), bool)
    gt[0, 2:8, 2:8] = True
    gt[1, 5:11, 5:11] = True  # overlaps the first worm
    wrong = np.zeros((1, 12, 12), bool)
    wrong[0, 0:2, 0:12] = True
    pred = np.concatenate([gt, wrong])
    # The wrong detection scored last leaves AP at 1; scored first it costs precision.
    good = metrics.coco_ap([pred], [gt], scores=[np.array([0.9, 0.8, 0.1])])
    bad = metrics.coco_ap([pred], [gt], scores=[np.array([0.5, 0.4, 0.9])])
    assert good["AP"] == pytest.approx(1.0)
    assert bad["AP"] < 0.9
    assert metrics.coco_ap([np.zeros((12, 12), np.int32)], [gt])["AP"] == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_contingency_matches_mask_products(seed):
    rng = np.random.default_rng(seed)
    a = rng.choice([0, 2, 3, 7, 40], size=(30, 26)).astype(np.int32)  # ids with gaps
    b = rng.choice([0, 1, 5, 6], size=(30, 26)).astype(np.int64)
    inter, area_a, area_b = metrics.contingency(a, b)
    ids_a, ids_b = [2, 3, 7, 40], [1, 5, 6]
    want = np.array([[np.sum((a == i) & (b == j)) for j in ids_b] for i in ids_a])
    np.testing.assert_array_equal(inter, want)
    np.testing.assert_array_equal(area_a, [np.sum(a == i) for i in ids_a])
    np.testing.assert_array_equal(area_b, [np.sum(b == j) for j in ids_b])
    # The mask-stack path (overlapping instances) agrees with the label path.
    stacked = metrics.contingency(metrics.instance_masks(a), b)
    for got, ref in zip(stacked, (inter, area_a, area_b)):
        np.testing.assert_array_equal(got, ref)
    assert inter.dtype == np.float64


def test_coco_ap_of_label_images_equals_mask_stacks():
    rng = np.random.default_rng(3)
    gt = np.zeros((40, 40), np.int32)
    for k, (y, x) in enumerate([(2, 2), (2, 20), (20, 4), (22, 22)], start=1):
        gt[y:y + 14, x:x + 14] = k
    pred = np.where(rng.random((40, 40)) < 0.1, 0, gt)
    pred[pred == 3] = 9  # an id gap
    scores = [np.array([0.9, 0.2, 0.7, 0.5])]
    by_labels = metrics.coco_ap([pred], [gt], scores=scores)
    by_masks = metrics.coco_ap([metrics.instance_masks(pred)], [metrics.instance_masks(gt)],
                               scores=scores)
    assert by_labels == by_masks and 0 < by_labels["AP"] <= 1
    with pytest.raises(ValueError, match=r"scores\[0\] must have shape \(4,\), one per instance"):
        metrics.coco_ap([pred], [gt], scores=[np.ones(3)])


def test_coco_ap_prints_nothing(capsys):
    gt = np.zeros((10, 10), np.int32)
    gt[2:6, 2:6] = 1
    metrics.coco_ap([gt], [gt])
    assert capsys.readouterr().out == ""


def test_coco_ap_scores_every_instance_of_a_crowded_image():
    # 300 instances: past COCO's 100 detections per image and past 255 (pycocotools' uint8).
    gt = np.kron(np.arange(1, 301).reshape(15, 20), np.ones((4, 4), np.int64)).astype(np.int32)
    assert metrics.coco_ap([gt], [gt])["AP"] == pytest.approx(1.0)
    half = np.where(gt % 2 == 0, gt, 0)  # finds every other instance
    assert metrics.coco_ap([half], [gt])["AP50"] == pytest.approx(0.5, abs=0.02)


def test_coco_ap_without_detections_marks_empty_size_ranges():
    gt = np.zeros((40, 40), np.int32)
    gt[2:6, 2:6] = 1  # one small instance only
    out = metrics.coco_ap([np.zeros_like(gt)], [gt])
    assert (out["AP"], out["APS"], out["APM"], out["APL"]) == (0.0, 0.0, -1.0, -1.0)
