"""``python -m bench``: measure every stage and print the table. See ``python -m bench --help``."""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from bench import images, measure
from bench.table import Row, format_markdown, format_text
from helpers.config import cpu_cores, resolve_device
from helpers.model import load_backbone


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line options."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=(
        "Images per second for decoding, the backbone, a training epoch, feature extraction and a head "
        "experiment on cached features. Offline: generated full-size-like JPEGs and random weights."))
    parser.add_argument("--images", type=int, default=None,
                        help="training images to generate and push through each stage (default 256; 16 with --quick)")
    parser.add_argument("--backbone", default="resnet18", help="torchvision model name (default resnet18)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="interleaved repeats per comparison, best kept (default 2; 1 with --quick)")
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's choice, one per core)")
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke test, not a measurement")
    parser.add_argument("--markdown", action="store_true", help="print the table as markdown")
    args = parser.parse_args(argv)
    args.images = args.images or (16 if args.quick else 256)
    args.repeats = args.repeats or (1 if args.quick else 2)
    if args.images < 1 or args.repeats < 1 or (args.threads is not None and args.threads < 1):
        parser.error("--images, --repeats and --threads must be at least 1.")
    return args


def describe_machine(device: str) -> str:
    """One line about where the numbers come from; the load average says how busy the machine was."""
    load = " / ".join(f"{value:.1f}" for value in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"
    gpu = f", GPU {torch.cuda.get_device_name(device)}" if device.startswith("cuda") else ""
    return (f"torch {torch.__version__}, {cpu_cores()} CPU cores, {torch.get_num_threads()} torch threads, "
            f"{platform.processor() or platform.machine()}{gpu}; load average (1/5/15 min) {load}")


def run(args: argparse.Namespace) -> list[Row]:
    """Generate the images, run every stage, return the rows."""
    device = resolve_device(args.device)
    backbone = load_backbone(args.backbone, pretrained=False).eval()
    with tempfile.TemporaryDirectory(prefix="flowers-bench-") as folder:
        start = time.perf_counter()
        full = images.make_full_size_dataset(Path(folder) / "full", args.images)
        prepared = images.make_prepared_copy(full, Path(folder) / "prepared")
        print(f"generated {args.images} training images (+ valid/test) in {time.perf_counter() - start:.1f} s: "
              f"full-size {images.mean_pixel_size(full)} px, {images.mean_file_kb(full):.0f} KB; "
              f"prepared {images.mean_pixel_size(prepared)} px, {images.mean_file_kb(prepared):.0f} KB", flush=True)
        rows = measure.decoding(full / "train", prepared / "train", args.repeats)
        rows += measure.forward_pass(backbone, args.images, device, args.repeats)
        rows += measure.training_epoch(backbone, full, device, args.repeats)
        rows += measure.extraction(backbone, full, device, args.repeats)
    head_size = (512, 64, 1280, 1) if args.quick else measure.CLASSIC_HEAD
    rows += measure.head_experiment(*head_size[:3], classes=102, epochs=head_size[3], device=device,
                                    repeats=args.repeats)
    return rows


def main(argv: list[str] | None = None) -> None:
    """Measure and print."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    os.environ["FLOWERS_DEVICE"] = device  # helpers that follow the settings (train_head) run there too
    print(f"bench: {args.backbone}, random weights, {device}; {describe_machine(device)}", flush=True)
    start = time.perf_counter()
    rows = run(args)
    print(format_markdown(rows) if args.markdown else format_text(rows))
    print(f"done in {time.perf_counter() - start:.0f} s; {describe_machine(device)}")


if __name__ == "__main__":
    main()
