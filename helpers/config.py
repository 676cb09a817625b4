"""Settings from environment variables, and one function that seeds everything.

Every notebook and the command line read their settings here, so there is one place
to change them. Nothing is read at import time: call :func:`get_settings` when you
need the values, and you get what the environment says *now*.

Environment variables (all optional):

==========================  ===================================================  =================
variable                    meaning                                              default
==========================  ===================================================  =================
``FLOWERS_DATA_ROOT``       folder that holds the prepared datasets              ``~/flowers-data``
``FLOWERS_TINY``            ``1``: the generated tiny slice and random weights   ``0``
                            (what CI and a first offline run use)
``FLOWERS_SPLIT``           ``classic`` (~80/10/10) or ``official`` (1,020 /     ``classic``
                            1,020 / 6,149) for the real Flowers102
``FLOWERS_BACKBONE``        a torchvision classification model name              ``resnet18``
``FLOWERS_DEVICE``          ``cpu``, ``cuda`` or ``auto``                        ``auto``
``FLOWERS_WORKERS``         DataLoader worker processes (empty: pick safely)     empty
``FLOWERS_BATCH_SIZE``      images per batch                                     ``32``
``FLOWERS_RESIZE_TO``       prepare Flowers102 with the shorter side at this     empty (full size)
                            many pixels (256: much faster decoding)
``FLOWERS_DATASET_DIR``     use this ImageFolder root (``train/``, ``valid/``,    empty
                            ``test/``) instead of Flowers102, e.g. your photos
==========================  ===================================================  =================
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

SPLITS = ("official", "classic")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


@dataclass(frozen=True)
class Settings:
    """What a notebook or command runs with. Build it with :func:`get_settings`."""

    data_root: Path
    tiny: bool
    split: str
    backbone: str
    device: str
    num_workers: int | None
    batch_size: int
    resize_to: int | None = None
    dataset_override: Path | None = None

    @property
    def pretrained(self) -> bool:
        """Pretrained weights are used unless we run on the tiny slice (offline, CI)."""
        return not self.tiny

    @property
    def dataset_dir(self) -> Path:
        """The ImageFolder root (with ``train/``, ``valid/``, ``test/``) these settings use."""
        if self.dataset_override is not None:
            return self.dataset_override
        if self.tiny:
            return self.data_root / "tiny"
        resized = f"-{self.resize_to}" if self.resize_to else ""
        return self.data_root / f"flowers102-{self.split}{resized}"

    @property
    def checkpoint_dir(self) -> Path:
        """Where the notebooks keep their checkpoints (beside the data, not in the repository)."""
        return self.data_root / "checkpoints"

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint notebook 04 saves and notebook 06 loads, named by dataset and backbone."""
        return self.checkpoint_dir / f"{self.dataset_dir.name}-{self.backbone}.pth"

    def describe(self) -> str:
        """A few lines that say what this run uses; notebooks print them."""
        data = "tiny generated slice (meaningless accuracy)" if self.tiny else f"Flowers102, {self.split} split"
        if self.dataset_override is not None:
            data = "your own folder (FLOWERS_DATASET_DIR)"
        weights = "pretrained (ImageNet)" if self.pretrained else "random (no download)"
        workers = "auto" if self.num_workers is None else str(self.num_workers)
        return "\n".join([
            f"data:      {data}",
            f"folder:    {self.dataset_dir}",
            f"backbone:  {self.backbone}, weights {weights}",
            f"device:    {self.device}",
            f"batch:     {self.batch_size}, workers {workers}",
        ])

    def as_dict(self) -> dict:
        """Plain-type copy, for printing or saving next to results."""
        values = asdict(self)
        values["data_root"] = str(self.data_root)
        values["dataset_override"] = None if self.dataset_override is None else str(self.dataset_override)
        return values


def _read_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(f"{name}={raw!r} is not a yes/no value; use 1 or 0.")


def _read_int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number.") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r} must be 0 or more.")
    return value


def cpu_cores() -> int:
    """How many CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_device(requested: str | None = "auto") -> str:
    """Turn ``auto``/``None`` into ``cuda`` when a GPU is present, else ``cpu``.

    Asking for ``cuda`` on a machine without one is an error, not a silent fallback.
    """
    choice = (requested or "auto").strip().lower()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(
                "A GPU was asked for, but torch sees no CUDA device. On Colab choose "
                "Runtime > Change runtime type > GPU; elsewhere drop --gpu / set FLOWERS_DEVICE=cpu."
            )
        return choice
    if choice == "cpu":
        return "cpu"
    raise ValueError(f"Unknown device {requested!r}: use cpu, cuda or auto.")


def get_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: the process environment) right now."""
    env = os.environ if env is None else env
    split = env.get("FLOWERS_SPLIT", "classic").strip().lower() or "classic"
    if split not in SPLITS:
        raise ValueError(f"FLOWERS_SPLIT={split!r}: choose one of {', '.join(SPLITS)}.")
    root = env.get("FLOWERS_DATA_ROOT", "").strip()
    batch_size = _read_int(env, "FLOWERS_BATCH_SIZE", 32)
    if batch_size == 0:
        raise ValueError("FLOWERS_BATCH_SIZE must be at least 1.")
    return Settings(
        data_root=Path(root).expanduser() if root else Path.home() / "flowers-data",
        tiny=_read_bool(env, "FLOWERS_TINY", False),
        split=split,
        backbone=env.get("FLOWERS_BACKBONE", "resnet18").strip() or "resnet18",
        device=resolve_device(env.get("FLOWERS_DEVICE", "auto")),
        num_workers=_read_int(env, "FLOWERS_WORKERS", None),
        batch_size=batch_size,
        resize_to=_read_int(env, "FLOWERS_RESIZE_TO", None) or None,
        dataset_override=Path(own).expanduser() if (own := env.get("FLOWERS_DATASET_DIR", "").strip()) else None,
    )


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch (CPU and CUDA) with one number.

    Returns a ``torch.Generator`` seeded the same way: pass it to a DataLoader
    (``generator=``) so that the shuffling order repeats too.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
