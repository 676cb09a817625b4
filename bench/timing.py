"""Timing with interleaved repeats: A, B, C, then B, C, A, ... and the best time of each.

On a shared machine the load changes from second to second. Running the candidates of
one comparison in turn, starting each repeat one candidate later, and keeping each
one's fastest repeat, exposes all of them to the same conditions; the best time is the
one least disturbed by other programs.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import torch


def synchronise(device: str) -> None:
    """Wait for queued GPU work, so that a timer measures work done, not work submitted."""
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def best_times(candidates: Mapping[str, Callable[[], object]], repeats: int, device: str = "cpu",
               warmup: bool = False) -> dict[str, float]:
    """Run every candidate ``repeats`` times, in turn; return each one's fastest run in seconds."""
    if warmup:
        for run in candidates.values():
            run()
            synchronise(device)
    best = {name: float("inf") for name in candidates}
    names = list(candidates)
    for repeat in range(max(1, repeats)):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            run = candidates[name]
            synchronise(device)
            start = time.perf_counter()
            run()
            synchronise(device)
            best[name] = min(best[name], time.perf_counter() - start)
    return best
