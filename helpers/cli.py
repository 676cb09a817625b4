"""The command line: ``train`` a classifier on a folder of images, ``predict`` one image.

In the spirit of the classic course's ``train.py`` and ``predict.py``::

    python -m helpers train DATA_DIR --arch resnet18 --learning-rate 0.001 --hidden-units 512 --epochs 5 --gpu
    python -m helpers predict IMAGE CHECKPOINT --top-k 5 --category-names cat_to_name.json --gpu
    python -m helpers tiny DATA_DIR                  # generate the tiny offline slice
    python -m helpers prepare DATA_DIR --split classic --resize-to 256   # download Flowers102

``flowers-train`` and ``flowers-predict`` are the same as the first two. Errors print
one line that says what is wrong and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from helpers.network import OfflineError

USER_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, FileExistsError, PermissionError,
               ValueError, RuntimeError, OfflineError)


def _device(gpu: bool) -> str:
    from helpers.config import resolve_device

    return resolve_device("cuda" if gpu else "cpu")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``train``."""
    parser.add_argument("data_dir", help="folder with train/, valid/ and test/ class folders")
    parser.add_argument("--arch", default="resnet18", help="torchvision model name (default: resnet18)")
    parser.add_argument("--learning-rate", type=float, default=0.001, help="Adam learning rate (default: 0.001)")
    parser.add_argument("--hidden-units", type=int, action="append",
                        help="size of a hidden layer; repeat for more layers, 0 for none (default: 512)")
    parser.add_argument("--dropout", type=float, default=0.2, help="dropout probability (default: 0.2)")
    parser.add_argument("--epochs", type=int, default=5, help="passes over the training images (default: 5)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per batch (default: 32)")
    parser.add_argument("--gpu", action="store_true", help="train on the GPU (an error if there is none)")
    parser.add_argument("--save-dir", default="checkpoints", help="where checkpoint.pth goes (default: checkpoints)")
    parser.add_argument("--random-weights", action="store_true",
                        help="no pretrained weights (offline; the default when FLOWERS_TINY=1)")
    parser.add_argument("--no-augment", action="store_true", help="train without data augmentation")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: automatic)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``predict``."""
    parser.add_argument("image", help="image file to classify")
    parser.add_argument("checkpoint", help="checkpoint.pth written by train")
    parser.add_argument("--top-k", type=int, default=None,
                        help="how many classes to show (default: 5, or all classes if there are fewer)")
    parser.add_argument("--category-names", default=None,
                        help="JSON file mapping class folders to names (default: the names saved in the checkpoint)")
    parser.add_argument("--gpu", action="store_true", help="predict on the GPU (an error if there is none)")


def hidden_units_from_options(values: list[int] | None) -> list[int]:
    """``--hidden-units`` values as a list; none given means [512], a lone 0 means no hidden layer."""
    if not values:
        return [512]
    if values == [0]:
        return []
    if any(v < 1 for v in values):
        raise ValueError(f"--hidden-units must be positive (or a single 0 for no hidden layer), got {values}.")
    return values


def run_train(args: argparse.Namespace) -> int:
    """Train a head on ``args.data_dir``, report every epoch and the test accuracy, save a checkpoint."""
    from helpers.checkpoint import save_checkpoint
    from helpers.config import get_settings, seed_everything
    from helpers.data import load_cat_to_name, make_loaders
    from helpers.models import build_model, check_weights_available, count_parameters, known_backbones
    from helpers.train import evaluate, fit

    device = _device(args.gpu)
    pretrained = not (args.random_weights or get_settings().tiny)
    hidden = hidden_units_from_options(args.hidden_units)
    if args.arch not in known_backbones():  # fail before any data is read
        raise ValueError(f"Unknown architecture {args.arch!r}. Known: {', '.join(known_backbones())}")
    if pretrained:
        check_weights_available(args.arch)
    seed_everything(args.seed)
    data_dir = Path(args.data_dir)
    loaders = make_loaders(data_dir, batch_size=args.batch_size, augment=not args.no_augment,
                           num_workers=args.workers, seed=args.seed, device=device)
    classes = loaders["train"].dataset.classes
    names_file = data_dir / "cat_to_name.json"
    names = load_cat_to_name(names_file) if names_file.exists() else None  # a broken file stops us before training
    save_dir = Path(args.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)  # an unusable --save-dir too, so no trained head is lost
    sizes = ", ".join(f"{split} {len(loader.dataset)}" for split, loader in loaders.items())
    print(f"data:      {data_dir} ({len(classes)} classes; {sizes} images)")
    model = build_model(args.arch, len(classes), hidden, args.dropout, pretrained=pretrained)
    counts = count_parameters(model)
    print(f"backbone:  {args.arch}, {'pretrained ImageNet' if pretrained else 'random'} weights, frozen")
    print(f"head:      {model.in_features} -> {' -> '.join(map(str, hidden + [len(classes)]))}, dropout {args.dropout}; "
          f"{counts['trainable']:,} of {counts['total']:,} parameters train")
    print(f"training:  {args.epochs} epochs, learning rate {args.learning_rate}, batch {args.batch_size}, on {device}")
    history = fit(model, loaders["train"], loaders["valid"], args.epochs, args.learning_rate, device=device,
                  progress=False)
    test = evaluate(model, loaders["test"], device)
    print(f"test:      loss {test['loss']:.3f}, accuracy {test['accuracy']:.1%} on {len(loaders['test'].dataset)} images")
    path = save_checkpoint(save_dir / "checkpoint.pth", model, loaders["train"].dataset.class_to_idx,
                           epoch=args.epochs, history=history, cat_to_name=names)
    print(f"saved:     {path}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Print the top-k classes of one image with their names and probabilities."""
    from helpers.checkpoint import load_checkpoint
    from helpers.data import load_cat_to_name
    from helpers.predict import predict

    device = _device(args.gpu)
    model = load_checkpoint(args.checkpoint, device=device)
    names = load_cat_to_name(args.category_names) if args.category_names else model.cat_to_name
    topk = args.top_k if args.top_k is not None else min(5, len(model.class_to_idx))
    predictions = predict(args.image, model, topk=topk, cat_to_name=names, device=device)
    print(f"{args.image} (checkpoint {args.checkpoint}, backbone {model.backbone_name}):")
    for rank, guess in enumerate(predictions, start=1):
        print(f"  {rank}. {guess.probability:6.1%}  {guess.name}  (class folder {guess.folder})")
    return 0


def run_tiny(args: argparse.Namespace) -> int:
    """Generate the tiny slice and say where it is."""
    from helpers.data import make_tiny_flowers

    root = make_tiny_flowers(args.data_dir, seed=args.seed)
    print(f"tiny slice: {root} (train/, valid/, test/, cat_to_name.json)")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Download and lay out Flowers102."""
    from helpers.data import prepare_flowers102

    root = prepare_flowers102(args.data_dir, split=args.split, resize_to=args.resize_to,
                              download_dir=args.download_dir)
    print(f"Flowers102 ({args.split} split): {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m helpers`` parser with its four commands."""
    parser = argparse.ArgumentParser(prog="python -m helpers", description="Train and use a flower classifier.")
    commands = parser.add_subparsers(dest="command", required=True)
    add_train_arguments(commands.add_parser("train", help="train a classifier head and save a checkpoint"))
    add_predict_arguments(commands.add_parser("predict", help="top-k classes of one image"))
    tiny = commands.add_parser("tiny", help="generate the tiny offline dataset")
    tiny.add_argument("data_dir")
    tiny.add_argument("--seed", type=int, default=0)
    prepare = commands.add_parser("prepare", help="download Oxford 102 Flowers into class folders")
    prepare.add_argument("data_dir")
    prepare.add_argument("--split", choices=("official", "classic"), default="official")
    prepare.add_argument("--resize-to", type=int, default=None,
                         help="store images with this shorter side in pixels (256 makes loading much faster)")
    prepare.add_argument("--download-dir", default=None,
                         help="where the original files go (default: DATA_DIR/downloads; share one between splits)")
    return parser


RUNNERS = {"train": run_train, "predict": run_predict, "tiny": run_tiny, "prepare": run_prepare}


def one_line(error: BaseException) -> str:
    """The error's message on one line (its explanation lines joined), for the terminal."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def _run(runner, args: argparse.Namespace) -> int:
    try:
        return runner(args)
    except USER_ERRORS as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m helpers``."""
    args = build_parser().parse_args(argv)
    return _run(RUNNERS[args.command], args)


def train_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowers-train`` console script."""
    parser = argparse.ArgumentParser(prog="flowers-train", description="Train a flower classifier head.")
    add_train_arguments(parser)
    return _run(run_train, parser.parse_args(argv))


def predict_main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowers-predict`` console script."""
    parser = argparse.ArgumentParser(prog="flowers-predict", description="Predict the class of one image.")
    add_predict_arguments(parser)
    return _run(run_predict, parser.parse_args(argv))
