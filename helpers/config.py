"""Settings from environment variables, seeding, and where and how fast the code runs.

Nothing is read at import time: :func:`get_settings` reads the ``FLOWERS_*`` environment
variables when called (the README's "Settings" table lists them).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

SPLITS = ("train", "valid", "test")


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
    resize_to: int | None
    own_dataset: Path | None

    @property
    def pretrained(self) -> bool:
        """Pretrained weights are used unless we run on the tiny slice (offline, CI)."""
        return not self.tiny

    @property
    def dataset_dir(self) -> Path:
        """The ImageFolder root (``train/``, ``valid/``, ``test/``) these settings use."""
        if self.own_dataset is not None:
            return self.own_dataset
        if self.tiny:
            return self.data_root / "tiny"
        return self.data_root / (f"flowers102-{self.split}" + (f"-{self.resize_to}" if self.resize_to else ""))

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint notebook 04 saves and notebooks 06 and 07 load."""
        return self.data_root / "checkpoints" / f"{self.dataset_dir.name}-{self.backbone}.pth"

    def describe(self) -> str:
        """A few lines that say what this run uses; notebooks print them."""
        if self.own_dataset is not None:
            data = "your own folder (FLOWERS_DATASET_DIR)"
        elif self.tiny:
            data = "tiny generated slice (accuracy says nothing about real flowers)"
        else:
            data = f"Flowers102, {self.split} split" + (f", stored at {self.resize_to} px" if self.resize_to else "")
        weights = "pretrained (ImageNet)" if self.pretrained else "random (no download)"
        workers = "auto" if self.num_workers is None else str(self.num_workers)
        return "\n".join([f"data:      {data}", f"folder:    {self.dataset_dir}",
                          f"backbone:  {self.backbone}, weights {weights}", f"device:    {self.device}",
                          f"batch:     {self.batch_size}, workers {workers}"])


def _read_int(env: Mapping[str, str], name: str, default: int | None) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise ValueError(f"{name}={raw!r} is not a whole number of 0 or more.")
    return int(raw)


def get_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from ``env`` (default: the process environment) right now."""
    env = os.environ if env is None else env
    split = env.get("FLOWERS_SPLIT", "").strip().lower() or "classic"
    if split not in ("classic", "official"):
        raise ValueError(f"FLOWERS_SPLIT={split!r}: choose classic or official.")
    tiny = env.get("FLOWERS_TINY", "").strip().lower()
    if tiny not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise ValueError(f"FLOWERS_TINY={tiny!r} is not a yes/no value; use 1 or 0.")
    batch_size = _read_int(env, "FLOWERS_BATCH_SIZE", 32)
    if batch_size == 0:
        raise ValueError("FLOWERS_BATCH_SIZE must be at least 1.")
    root = env.get("FLOWERS_DATA_ROOT", "").strip()
    own = env.get("FLOWERS_DATASET_DIR", "").strip()
    return Settings(
        data_root=Path(root).expanduser() if root else Path.home() / "flowers-data",
        tiny=tiny in ("1", "true", "yes", "on"),
        split=split,
        backbone=env.get("FLOWERS_BACKBONE", "").strip() or "resnet18",
        device=resolve_device(env.get("FLOWERS_DEVICE", "auto")),
        num_workers=_read_int(env, "FLOWERS_WORKERS", None),
        batch_size=batch_size,
        resize_to=_read_int(env, "FLOWERS_RESIZE_TO", 256) or None,
        own_dataset=Path(own).expanduser() if own else None,
    )


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python's ``random``, NumPy and torch; returns a seeded ``torch.Generator`` for a DataLoader's shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def resolve_device(requested: str | None = "auto") -> str:
    """``auto`` becomes ``cuda`` when a GPU is present, else ``cpu``; ``cuda`` without one is an error."""
    choice = (requested or "auto").strip().lower()
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError("A GPU was asked for, but torch sees no CUDA device. On Colab choose Runtime > "
                               "Change runtime type > GPU; elsewhere drop --gpu or set FLOWERS_DEVICE=cpu.")
        return choice
    if choice == "cpu":
        return "cpu"
    raise ValueError(f"Unknown device {requested!r}: use cpu, cuda or auto.")


def cpu_cores() -> int:
    """How many CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_num_workers(device: str) -> int:
    """Loader worker processes: enough to feed a GPU; none on a 2-core CPU, whose cores the network needs itself."""
    cores = cpu_cores()
    if device.startswith("cuda"):
        return min(8, cores)
    return 0 if cores <= 2 else min(4, cores // 2)


def cpu_has_native_bf16() -> bool:
    """True if the CPU flags (Linux ``/proc/cpuinfo``) list AVX512-BF16 or AMX-BF16 instructions."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: str) -> torch.dtype | None:
    """The one precision policy for training and inference: the reduced precision to compute in.

    float16 on CUDA; bfloat16 on CPUs that compute it in hardware (about 2.5x faster
    convolutions there); ``None`` (float32) on other CPUs, where bfloat16 is slower.
    """
    if device.startswith("cuda"):
        return torch.float16
    return torch.bfloat16 if cpu_has_native_bf16() else None
