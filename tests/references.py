"""Independent float64 numpy references for the numeric functions (loops, no JAX)."""

import numpy as np


def sine_maps(params, height, width, stride=1, offset=(0, 0), frame=None):
    params = np.asarray(params, np.float64)
    frame_h, frame_w = (height, width) if frame is None else frame
    out = np.zeros((-(-height // stride), -(-width // stride), len(params)))
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            y, x = i * stride + offset[0], j * stride + offset[1]
            for k, (a, b, c) in enumerate(params):
                out[i, j, k] = np.sin(a * x / frame_w + b * y / frame_h + c)
    return out


def original_maps(sins, height, width):
    """The PyTorch original: sin(alpha * row / (H - 1) + beta * col / (W - 1) + phi)."""
    u = np.linspace(0, 1, height)[:, None, None]
    v = np.linspace(0, 1, width)[None, :, None]
    sins = np.asarray(sins, np.float64)
    return np.sin(sins[:, 0] * u + sins[:, 1] * v + sins[:, 2])


def instance_embeddings(maps, labels):
    maps = np.asarray(maps, np.float64)
    labels = np.asarray(labels)
    ids = sorted(set(labels.ravel().tolist()) - {0})
    return np.array([maps[labels == i].mean(axis=0) for i in ids]).reshape(len(ids), maps.shape[-1])


def distance(a, b, norm):
    d = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return d.sum() if norm == 1 else np.sqrt((d * d).sum())


def hinge_loss(maps, labels_batch, margin, norm=1):
    total = 0.0
    for labels in labels_batch:
        e = instance_embeddings(maps, labels)
        terms = [max(0.0, margin - distance(e[i], e[j], norm))
                 for i in range(len(e)) for j in range(i + 1, len(e))]
        total += np.mean(terms) if terms else 0.0
    return total


def collision_rate(maps, labels_batch, margin, norm=1):
    close = pairs = 0
    for labels in labels_batch:
        e = instance_embeddings(maps, labels)
        for i in range(len(e)):
            for j in range(i + 1, len(e)):
                pairs += 1
                close += distance(e[i], e[j], norm) < margin
    return close / pairs if pairs else 0.0


def sbd(pred, gt):
    def best_dice(a, b):
        ids_a = [i for i in np.unique(a) if i]
        ids_b = [i for i in np.unique(b) if i]
        if not ids_a:
            return 1.0
        if not ids_b:
            return 0.0
        scores = []
        for i in ids_a:
            ma = a == i
            scores.append(max(2 * (ma & (b == j)).sum() / (ma.sum() + (b == j).sum())
                              for j in ids_b))
        return float(np.mean(scores))

    return min(best_dice(pred, gt), best_dice(gt, pred))
