"""Shared pieces of the benchmark scripts: the PyTorch original's clustering, run with a timeout,
and a check that the machine was idle (a figure taken while anything else ran is not a figure)."""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import time

import numpy as np
from sklearn.cluster import MeanShift

__all__ = ["load_note", "original_clustering", "speedup_note", "timed_original"]


def original_clustering(emb: np.ndarray, fg: np.ndarray, bandwidth: float, min_size: int,
                        every_pixel: bool = True):
    """The original's inference: sklearn ``MeanShift(bandwidth, bin_seeding=True)`` over every
    pixel (the original has no foreground handling; ``every_pixel=False``: over the foreground
    only), labels restricted to ``fg``, then labels under ``min_size`` pixels dropped (no spatial
    split).

    Returns:
      ``(H, W)`` int32 labels, 0 = background.
    """
    where = np.ones(fg.shape, bool) if every_pixel else fg
    labels = np.zeros(fg.shape, np.int32)
    labels[where] = 1 + MeanShift(bandwidth=bandwidth, bin_seeding=True).fit_predict(emb[where])
    labels[~fg] = 0
    sizes = np.bincount(labels.ravel())
    labels[(sizes < min_size)[labels]] = 0
    return labels


def _child(queue, *args):
    start = time.perf_counter()
    labels = original_clustering(*args)
    queue.put((time.perf_counter() - start, labels))


def timed_original(emb, fg, bandwidth, min_size, timeout, every_pixel=True):
    """Runs :func:`original_clustering` in a child process; ``(seconds, labels)``, or
    ``(None, None)`` when it did not finish within ``timeout`` seconds."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child,
                            args=(queue, emb, fg, bandwidth, min_size, every_pixel))
    child.start()
    try:
        return queue.get(timeout=timeout)
    except queue_module.Empty:
        return None, None
    finally:
        child.terminate()
        child.join()


def _machine_busy_s() -> float:
    """CPU seconds all processes of the machine have used since boot (``/proc/stat``)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait


def _own_busy_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


_START = (time.perf_counter(), _machine_busy_s(), _own_busy_s())  # when the benchmark began


def load_note(before: tuple[float, float, float]) -> str:
    """One line on the machine's load during a run, with a warning when it was not idle.

    Idle means: the CPU time the whole machine used since this module was imported, minus this
    process's and its finished children's, is under 10% of one core over the run. (A load
    average cannot tell: the benchmark's own threads raise it.)

    Args:
      before: ``os.getloadavg()`` taken when the run started (printed for reference).
    """
    after = os.getloadavg()
    cores = os.cpu_count() or 1
    wall = time.perf_counter() - _START[0]
    others = (_machine_busy_s() - _START[1]) - (_own_busy_s() - _START[2])
    note = (f"load average (1 min) before {before[0]:.2f}, after {after[0]:.2f} on {cores} "
            f"cores; other processes used {max(others, 0.0):.1f} CPU s in {wall:.0f} s")
    if others > 0.1 * wall:
        note += ("\nWARNING: something else used the cores during this run; its timings are not "
                 "figures: rerun it on an idle machine")
    return note


def speedup_note(ratios, baseline: str) -> str:
    """One line: the smallest and the geometric-mean speed-up over ``baseline`` (goal 20x)."""
    ratios = np.asarray(ratios, np.float64)
    return (f"speed-up over {baseline}: min {ratios.min():.0f}x, geometric mean "
            f"{np.exp(np.log(ratios).mean()):.0f}x (goal >= 20x; a stopped run counts as "
            f"--timeout seconds)")
