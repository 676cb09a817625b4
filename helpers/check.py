"""``python -m helpers check``: is this machine ready for the course? Run it first on a new machine.

It prints the versions, the device and precision the notebooks will use, and three trials: a training step
in that precision against float32, a DataLoader with the default workers, and the forward speed. The verdict
comes last: one line per problem, with its fix.
"""

from __future__ import annotations

import math
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from helpers.config import Settings, autocast_dtype, cpu_cores, cpu_has_native_bf16, get_settings
from helpers.data import make_loaders
from helpers.download import OfflineError, make_tiny_flowers
from helpers.model import build_head, check_weights_available, feature_size, load_backbone, weights_file
from helpers.train import autocast, batch_to_device, model_outputs, model_to_device, train_epoch

Problems = list[str]  # one line each: what is wrong, then what to do


def version_lines(problems: Problems) -> list[str]:
    """Python and the course's packages; missing or too old ones become problems."""
    lines = [f"python:      {platform.python_version()} ({sys.executable})"]
    for package in ("torch", "torchvision", "ipywidgets", "matplotlib", "numpy"):
        try:
            lines.append(f"{package + ':':<12} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            problems.append(f"{package} is not installed: pip install {package}")
    if tuple(int(part) for part in torch.__version__.split(".")[:2]) < (2, 6):
        problems.append(f"torch {torch.__version__} is older than 2.6: pip install -U torch torchvision")
    return lines


def device_lines(settings: Settings) -> list[str]:
    """The device, the precision policy, and what this CPU does with bfloat16."""
    dtype = autocast_dtype(settings.device, settings.precision)
    gpu = f" ({torch.cuda.get_device_name()})" if settings.device.startswith("cuda") else ""
    if not Path("/proc/cpuinfo").exists():  # macOS, Windows: no flags to read
        bf16 = "support not known here: try FLOWERS_PRECISION=bfloat16 and compare the forward speed below"
    elif cpu_has_native_bf16():
        bf16 = "native: FLOWERS_PRECISION=bfloat16 makes a CPU's convolutions about 2.5x faster"
    else:
        bf16 = "emulated (slower than float32): keep float32 on the CPU"
    return [f"device:      {settings.device}{gpu}",
            f"precision:   {str(dtype or torch.float32).removeprefix('torch.')} "
            f"(FLOWERS_PRECISION={settings.precision})",
            f"cpu:         {cpu_cores()} cores, bfloat16 {bf16}"]


def forward_backward(settings: Settings, problems: Problems, batch_size: int = 4) -> str:
    """The course's inference path and one training step in the chosen precision, against float32.

    Random weights, evaluation mode: the difference from the float32 reference is the precision's (and
    the device's) alone. A ``train_epoch`` step at learning rate 0 shows whether loss and gradients stay
    finite.
    """
    torch.manual_seed(0)
    backbone = load_backbone(settings.backbone, pretrained=False)
    model = nn.Sequential(backbone, build_head(feature_size(backbone), 10, []))
    batch = [(torch.randn(batch_size, 3, 224, 224), torch.arange(batch_size) % 10)]
    with torch.no_grad():
        reference = model.eval()(batch[0][0])  # float32 on the CPU
    log_probs, _ = model_outputs(model, batch, settings.device)
    loss = train_epoch(model, batch, torch.optim.SGD(model.parameters(), lr=0.0), settings.device)["loss"]
    gradients = [p.grad for p in model.parameters() if p.grad is not None]
    if not (math.isfinite(loss) and all(torch.isfinite(g).all() for g in gradients)):
        problems.append("the training step gave a non-finite loss or gradients in this precision: "
                        "set FLOWERS_PRECISION=float32")
    difference = (log_probs - reference).abs().max().item()
    return (f"train step:  {settings.backbone}, loss {loss:.3f}, "
            f"largest difference from float32 {difference:.2g}")


def loader_trial(settings: Settings, problems: Problems) -> str:
    """A DataLoader with the default number of workers for the device, over a few generated images."""
    with tempfile.TemporaryDirectory() as folder:
        root = make_tiny_flowers(folder, num_classes=2, images_per_split=(8, 1, 1), image_size=64)
        loader = make_loaders(root, 4, device=settings.device, num_workers=settings.num_workers)["train"]
        workers, start = loader.num_workers, time.perf_counter()
        try:
            images = sum(len(labels) for _, labels in loader)
        except Exception as error:  # noqa: BLE001 - worker processes fail in many ways (memory, spawn)
            problems.append(f"a DataLoader with {workers} worker(s) failed ({type(error).__name__}: "
                            f"{' '.join(str(error).split())[:200]}): set FLOWERS_WORKERS=0")
            return f"data loader: failed with {workers} worker(s)"
        del loader  # ends the worker processes before the folder goes
    return f"data loader: {images} images with {workers} worker(s) in {time.perf_counter() - start:.1f} s"


@torch.no_grad()
def forward_speed(settings: Settings, batch_size: int = 8, batches: int = 3) -> str:
    """Images per second through the backbone in evaluation mode, after one warm-up batch."""
    backbone = model_to_device(load_backbone(settings.backbone, pretrained=False), settings.device).eval()
    images = batch_to_device(torch.randn(batch_size, 3, 224, 224), settings.device)
    for number in range(batches + 1):
        if number == 1:
            synchronize(settings.device)
            start = time.perf_counter()
        with autocast(settings.device):
            backbone(images)
    synchronize(settings.device)
    speed = batches * batch_size / (time.perf_counter() - start)
    return f"forward:     {speed:.0f} images/s ({settings.backbone}, batch {batch_size}, 224 px)"


def synchronize(device: str) -> None:
    """Wait for the GPU to finish its queued work, so that timings measure it."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    elif device == "mps":
        torch.mps.synchronize()


def weights_line(settings: Settings, problems: Problems) -> str:
    """Whether the pretrained weights are cached or downloadable (all but the tiny slice need them)."""
    path = weights_file(settings.backbone)
    try:
        check_weights_available(settings.backbone)
    except OfflineError:
        problems.append(f"no pretrained {settings.backbone} weights: not in {path} and no internet; "
                        "connect, copy the file there, or set FLOWERS_TINY=1 (random weights, tiny slice)")
        return "weights:     missing"
    return f"weights:     pretrained {settings.backbone}, " + (f"cached at {path}" if path.exists()
                                                              else "downloadable (not cached yet)")


def run_check(print_line: Callable[[str], None] = print) -> int:
    """Print the report and the verdict; return 0 if the machine is ready, 1 if not."""
    problems: Problems = []
    lines = version_lines(problems)
    try:
        settings = get_settings()
    except (ValueError, RuntimeError) as error:
        problems.append(f"the settings cannot be used: {error}")
        trials = []
    else:
        lines += device_lines(settings)
        trials = [lambda: forward_backward(settings, problems), lambda: loader_trial(settings, problems),
                  lambda: forward_speed(settings)]
        trials[:0] = [lambda: weights_line(settings, problems)] if settings.pretrained else []
    for line in lines:
        print_line(line)
    for trial in trials:
        try:
            print_line(trial())
        except Exception as error:  # noqa: BLE001 - every failure becomes a problem line, not a traceback
            problems.append(f"{type(error).__name__}: {' '.join(str(error).split())} "
                            "(README: When something goes wrong)")
    for problem in problems:
        print_line(f"problem:     {problem}")
    count = f"{len(problems)} problem{'s' * (len(problems) > 1)}"
    print_line(f"verdict:     {'ready' if not problems else f'not ready ({count} above)'}")
    return 1 if problems else 0
