"""The command line, ``python -m helpers``: ``train`` a classifier on a folder of images, ``predict`` one
image, make the ``tiny`` slice, ``prepare`` Flowers102, ``check`` the machine. The README shows every command.

The classic course project's spellings (``--save_dir``, ``--learning_rate``, ``--hidden_units``, ``--top_k``,
``--category_names``) work too. The project's own errors print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from helpers.check import run_check
from helpers.checkpoint import load_checkpoint, save_checkpoint
from helpers.config import DeviceError, get_settings, resolve_device, seed_everything
from helpers.data import eval_transform, load_cat_to_name, make_loaders, train_transform
from helpers.download import OfflineError, make_tiny_flowers, prepare_flowers102
from helpers.features import FeatureBatches, cached_features, train_head
from helpers.inference import predict
from helpers.model import (build_model, check_backbone_name, check_weights_available, count_parameters,
                           unfreeze)
from helpers.train import best_epoch, evaluate, fit, format_epoch, make_optimizer, parameter_groups

USER_ERRORS = (OSError, ValueError, OfflineError, DeviceError)


def hidden_units_from_options(values: list[int] | None) -> list[int]:
    """``--hidden-units`` values as a list: none given means [512], a lone 0 means no hidden layer."""
    if not values:
        return [512]
    if values == [0]:
        return []
    if any(v < 1 for v in values):
        raise ValueError(f"--hidden-units must be positive (or one 0 for no hidden layer), got {values}.")
    return values


def gpu_or_cpu(gpu: bool) -> str:
    """``--gpu``: the machine's accelerator, CUDA or a Mac's MPS (an error if it has none); else the CPU."""
    device = resolve_device("auto") if gpu else "cpu"
    return resolve_device("cuda") if gpu and device == "cpu" else device  # the error says what to do


def run_train(args: argparse.Namespace) -> int:
    """Train on ``args.data_dir``, report every epoch and the test accuracy, save a checkpoint."""
    device = gpu_or_cpu(args.gpu)
    pretrained = not (args.random_weights or get_settings().tiny)
    hidden, lr = hidden_units_from_options(args.hidden_units), args.learning_rate
    check_backbone_name(args.arch)  # fail before any data is read
    if pretrained:
        check_weights_available(args.arch)
    data_dir, save_dir = Path(args.data_dir), Path(args.save_dir)
    names = load_cat_to_name(data_dir) if (data_dir / "cat_to_name.json").exists() else None
    save_dir.mkdir(parents=True, exist_ok=True)  # an unusable --save-dir fails now, before training
    seed_everything(args.seed)
    train_tf = eval_transform(args.arch) if args.no_augment else train_transform(args.arch)
    loaders = make_loaders(data_dir, args.batch_size, train_tf, eval_transform(args.arch), seed=args.seed,
                           num_workers=args.workers, device=device)
    classes = loaders["train"].dataset.classes
    sizes = ", ".join(f"{split} {len(loaders[split].dataset)}" for split in ("train", "valid", "test"))
    print(f"data:      {data_dir} ({len(classes)} classes; {sizes} images)")
    model = build_model(args.arch, len(classes), hidden, args.dropout, pretrained=pretrained)
    stages = unfreeze(model, args.unfreeze) if args.unfreeze else []
    if args.cached_features and (stages or not args.no_augment):
        raise ValueError("--cached-features needs a frozen backbone and --no-augment: "
                         "the features are computed once.")
    counts = count_parameters(model)
    print(f"backbone:  {args.arch}, {'pretrained ImageNet' if pretrained else 'random'} weights, "
          + (f"trains {', '.join(stages)} at learning rate {args.backbone_lr}" if stages else "frozen"))
    print(f"head:      {model.in_features} -> {' -> '.join(map(str, hidden + [len(classes)]))}, dropout "
          f"{args.dropout}; {counts['trainable']:,} of {counts['total']:,} parameters train")
    print(f"training:  {args.epochs} epochs, learning rate {lr}, batch {args.batch_size}, on {device}")
    if args.cached_features:  # the same head and loop, on features the frozen backbone computed once
        features = cached_features(model, data_dir, num_workers=args.workers, device=device, seed=args.seed)
        batches = FeatureBatches(features["train"], args.batch_size, seed=args.seed)
        head, history = train_head(batches, features["valid"], hidden, args.dropout, lr, args.epochs,
                                   seed=args.seed)
        for epoch in history["epoch"]:  # one line per epoch, as fit prints them while training images
            print(format_epoch({key: values[:epoch] for key, values in history.items()}, args.epochs))
        model.head.load_state_dict(head.state_dict())
        test = evaluate(head, FeatureBatches(features["test"], 256, shuffle=False), device)
    else:
        optimizer = make_optimizer(parameter_groups(model, lr, args.backbone_lr), lr)
        history = fit(model, loaders["train"], loaders["valid"], args.epochs, lr, optimizer=optimizer,
                      train_eval_batches=loaders["train_eval"], device=device, progress=False)
        test = evaluate(model, loaders["test"], device)
    print(f"test:      accuracy {test['accuracy']:.1%} (loss {test['loss']:.3f}) "
          f"on {len(loaders['test'].dataset)} images, with the weights of epoch {best_epoch(history)}")
    path = save_checkpoint(save_dir / "checkpoint.pth", model, loaders["train"].dataset.class_to_idx,
                           epoch=best_epoch(history), history=history, cat_to_name=names)
    print(f"saved:     {path}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    """Print the top-k classes of one image with names and probabilities."""
    device = gpu_or_cpu(args.gpu)
    model = load_checkpoint(args.checkpoint, device=device)
    names = load_cat_to_name(args.category_names) if args.category_names else None
    topk = args.top_k if args.top_k is not None else min(5, len(model.class_to_idx))
    print(f"{args.image} (checkpoint {args.checkpoint}, backbone {model.backbone_name}):")
    for rank, guess in enumerate(predict(args.image, model, topk, names, device), start=1):
        print(f"  {rank}. {guess.probability:6.1%}  {guess.name}  (class folder {guess.folder})")
    return 0


def run_tiny(args: argparse.Namespace) -> int:
    """Generate the tiny slice and say where it is."""
    root = make_tiny_flowers(args.data_dir, seed=args.seed)
    print(f"tiny slice: {root} (train/, valid/, test/, cat_to_name.json)")
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    """Download and lay out Flowers102."""
    resize_to = args.resize_to or None
    root = prepare_flowers102(args.data_dir, args.split, resize_to, args.download_dir)
    print(f"Flowers102 ({args.split} split, {f'{resize_to} px' if resize_to else 'full size'}): {root}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m helpers`` parser with its five commands."""
    parser = argparse.ArgumentParser(prog="python -m helpers",
                                     description="Train and use a flower classifier.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train a classifier and save a checkpoint")
    train.add_argument("data_dir", help="folder with train/, valid/ and test/ class folders")
    train.add_argument("--arch", default="resnet18", help="torchvision model name (default: resnet18)")
    train.add_argument("--learning-rate", "--learning_rate", type=float, default=0.001,
                       help="Adam learning rate of the head (default: 0.001)")
    train.add_argument("--hidden-units", "--hidden_units", type=int, action="append",
                       help="size of a hidden layer; repeat for more layers, 0 for none (default: 512)")
    train.add_argument("--dropout", type=float, default=0.2, help="dropout probability (default: 0.2)")
    train.add_argument("--epochs", type=int, default=5, help="passes over the training images (default: 5)")
    train.add_argument("--batch-size", "--batch_size", type=int, default=32,
                       help="images per batch (default: 32)")
    train.add_argument("--gpu", action="store_true",
                       help="train on the GPU: CUDA, or MPS on a Mac (an error if there is none)")
    train.add_argument("--save-dir", "--save_dir", default="checkpoints",
                       help="where checkpoint.pth goes (default: checkpoints)")
    train.add_argument("--unfreeze", action="append", metavar="STAGE",
                       help="fine-tune this backbone stage too, e.g. layer4 for resnets (repeatable)")
    train.add_argument("--backbone-lr", "--backbone_lr", type=float, default=0.0001,
                       help="learning rate of unfrozen backbone stages (default: 0.0001)")
    train.add_argument("--random-weights", action="store_true",
                       help="no pretrained weights (offline; the default when FLOWERS_TINY=1)")
    train.add_argument("--no-augment", action="store_true", help="train without data augmentation")
    train.add_argument("--cached-features", action="store_true",
                       help="with --no-augment: run the frozen backbone once, train the head on its features")
    train.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: automatic)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    predict_parser = commands.add_parser("predict", help="top-k classes of one image")
    predict_parser.add_argument("image", help="image file to classify")
    predict_parser.add_argument("checkpoint", help="checkpoint.pth written by train")
    predict_parser.add_argument("--top-k", "--top_k", type=int, default=None,
                                help="how many classes (default: 5, or all if fewer)")
    predict_parser.add_argument("--category-names", "--category_names", default=None,
                                help="JSON file: class folder -> name (default: the names in the checkpoint)")
    predict_parser.add_argument("--gpu", action="store_true",
                                help="predict on the GPU: CUDA or MPS (an error if there is none)")
    tiny = commands.add_parser("tiny", help="generate the tiny offline dataset")
    tiny.add_argument("data_dir")
    tiny.add_argument("--seed", type=int, default=0)
    prepare = commands.add_parser("prepare", help="download Oxford 102 Flowers into class folders")
    prepare.add_argument("data_dir")
    prepare.add_argument("--split", choices=("classic", "official"), default="classic")
    prepare.add_argument("--resize-to", type=int, default=256, help="shorter side in px; 0 keeps full size")
    prepare.add_argument("--download-dir", default=None,
                         help="where the original files go (default: DATA_DIR/downloads)")
    commands.add_parser("check",
                        help="is this machine ready? versions, device, precision, a training step, speed")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m helpers``: run a command; the project's own errors print one line, others
    (torch's RuntimeErrors among them) keep their traceback."""
    args = build_parser().parse_args(argv)
    runner = {"train": run_train, "predict": run_predict, "tiny": run_tiny, "prepare": run_prepare,
              "check": lambda _: run_check()}[args.command]
    try:
        return runner(args)
    except USER_ERRORS as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        print(f"error: {message or type(error).__name__}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
