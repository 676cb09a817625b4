"""Helpers for the transfer-learning flower course.

Each module has one job:

- ``config``: settings from environment variables, seeding;
- ``data``: Flowers102 preparation, the generated tiny slice, transforms, loaders, checks;
- ``models``: backbones, the classifier head, freezing;
- ``train``: one epoch, evaluation, ``fit``;
- ``features``: frozen-backbone features, their cache, heads trained on them;
- ``checkpoint``: saving and loading trained classifiers safely;
- ``predict``: preparing one image and the top-k prediction;
- ``experiments``: the overfitting experiments on cached features, their tables and plots;
- ``evaluation``: test accuracy, per-class accuracy, confusions and mistakes;
- ``backbones``: a table of torchvision backbones from their weights' metadata;
- ``plots`` and ``widgets``: what the notebooks draw and the sliders they show;
- ``images``, ``tiny``, ``flowers102``, ``network``: safe image loading, the generated slice,
  the real dataset, and the offline check (re-exported by ``data`` where learners need them);
- ``cli``: the ``train`` and ``predict`` command line.

Importing ``helpers`` has no side effects; submodules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "config", "data", "models", "train", "features", "checkpoint",
    "predict", "plots", "widgets", "cli", "images", "network", "tiny", "flowers102",
    "experiments", "evaluation", "backbones",
)

__all__ = ["seed_everything", "__version__", *_SUBMODULES]


def seed_everything(seed: int = 0) -> "Any":
    """Seed Python, NumPy and torch (see :func:`helpers.config.seed_everything`)."""
    from helpers.config import seed_everything as _seed

    return _seed(seed)


def __getattr__(name: str) -> Any:
    """Import ``helpers.<name>`` lazily, so ``import helpers`` stays fast and side-effect free."""
    if name in _SUBMODULES:
        return importlib.import_module(f"helpers.{name}")
    raise AttributeError(f"module 'helpers' has no attribute {name!r}")
