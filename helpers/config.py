"""Settings from environment variables, seeding, and where and how fast the code runs.

Nothing is read at import time: :func:`get_settings` reads the ``FLOWERS_*`` environment
variables when called (the README's "Settings" table lists them).
"""

from __future__ import annotations

import functools
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np
import torch

SPLITS = ("train", "valid", "test")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")


class DeviceError(RuntimeError):
    """A device was asked for that this machine does not have. The message says what to do."""


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
    precision: str = "auto"

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
        size = f"-{self.resize_to}" if self.resize_to else ""
        return self.data_root / f"flowers102-{self.split}{size}"

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
            stored = f", stored at {self.resize_to} px" if self.resize_to else ""
            data = f"Flowers102, {self.split} split{stored}"
        weights = "pretrained (ImageNet)" if self.pretrained else "random (no download)"
        workers = "auto" if self.num_workers is None else str(self.num_workers)
        dtype = autocast_dtype(self.device, self.precision)
        precision = f"{'float32' if dtype is None else str(dtype).removeprefix('torch.')} ({self.precision})"
        return "\n".join([f"data:      {data}", f"folder:    {self.dataset_dir}",
                          f"backbone:  {self.backbone}, weights {weights}",
                          f"device:    {self.device}, precision {precision}",
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
        precision=read_precision(env),
    )


def read_precision(env: Mapping[str, str] | None = None) -> str:
    """``FLOWERS_PRECISION`` from ``env`` (default: ``os.environ``): auto, float32, bfloat16 or float16."""
    env = os.environ if env is None else env
    return check_precision(env.get("FLOWERS_PRECISION", "").strip().lower() or "auto", "FLOWERS_PRECISION=")


def check_precision(precision: str, where: str = "precision=") -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ``ValueError`` that lists them."""
    if precision not in PRECISIONS:
        raise ValueError(f"{where}{precision!r}: choose one of {', '.join(PRECISIONS)}.")
    return precision


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed ``random``, NumPy and torch; returns a seeded ``torch.Generator`` for a DataLoader's shuffling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def resolve_device(requested: str | None = None) -> str:
    """The device to compute on. ``auto`` picks CUDA, then Apple's MPS, then the CPU; ``None``
    follows the settings (``FLOWERS_DEVICE``, default ``auto``), as the precision policy does.

    Every ``device`` parameter of ``helpers`` is resolved here, so ``None`` means the same everywhere.
    """
    choice = (requested or os.environ.get("FLOWERS_DEVICE") or "auto").strip().lower()
    if choice == "auto":
        # torch.accelerator (torch >= 2.6) names the machine's accelerator; a CUDA build names
        # "cuda" even without a GPU, so is_available() comes first.
        kind = torch.accelerator.current_accelerator().type if torch.accelerator.is_available() else "cpu"
        return kind if kind in ("cuda", "mps") else "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("A GPU was asked for, but torch sees no CUDA device. On Colab choose Runtime > "
                               "Change runtime type > GPU; elsewhere drop --gpu or set FLOWERS_DEVICE=cpu.")
        return choice
    if choice == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError("Apple's MPS was asked for, but torch cannot use it: it needs a Mac with Apple "
                              "silicon, macOS 12.3+ and an arm64 Python. Set FLOWERS_DEVICE=cpu or auto.")
        return choice
    if choice == "cpu":
        return "cpu"
    raise ValueError(f"Unknown device {requested!r}: use auto, cpu, cuda or mps.")


def cpu_cores() -> int:
    """How many CPU cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_num_workers(device: str) -> int:
    """Loader worker processes, chosen for where the network runs.

    CUDA: up to 8, so that decoding keeps the GPU busy. MPS: up to 4, as macOS starts each worker as a
    fresh Python process (spawn), at a second or two and some memory each, once per loader (workers
    persist). CPU: none on 2 cores, which the network needs itself (workers would fight torch's threads).
    """
    cores = cpu_cores()
    if device.startswith("cuda"):
        return min(8, cores)
    if device == "mps":
        return min(4, cores)
    return 0 if cores <= 2 else min(4, cores // 2)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """True if the CPU flags (Linux ``/proc/cpuinfo``) list AVX512-BF16, AMX-BF16 or Arm's BF16; read once."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16", "bf16"))  # bf16: Arm


def autocast_dtype(device: str, precision: str | None = None) -> torch.dtype | None:
    """The one precision policy: the reduced precision to compute in on ``device``, or ``None`` for float32.

    ``precision``: one of :data:`PRECISIONS`; ``None`` reads ``FLOWERS_PRECISION`` (default auto). ``auto``
    is float16 on CUDA (tensor cores; the loop scales the loss) and float32 elsewhere: on the CPU, autocast
    results change with the machine (native bfloat16 or not), and MPS autocast support varies across torch
    and macOS versions. bfloat16 on a CPU is one setting away; ``python -m helpers check`` says whether this
    CPU computes it natively (about 2.5x faster convolutions) or emulates it (slower than float32).
    """
    choice = read_precision() if precision is None else check_precision(precision)
    if choice == "auto":
        return torch.float16 if device.startswith("cuda") else None
    return None if choice == "float32" else getattr(torch, choice)
