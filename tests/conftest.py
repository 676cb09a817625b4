"""Shared fixtures: the tiny slice (generated once per session), small backbones, no network.

Everything here runs offline and on a CPU. Tests that change a dataset work on a copy
(``tiny_copy``), never on the session-wide ``tiny_root``.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
from pathlib import Path
from typing import Callable, Iterator

import pytest
import torch
from torch import nn

from helpers.download import make_tiny_flowers

# Small enough to keep every test fast (the transforms resize to 256 and crop 224 anyway).
# Test modules repeat these numbers where they need them (conftest is not imported).
IMAGE_SIZE = 64
TINY_COUNTS = (4, 2, 2)


@pytest.fixture(autouse=True)
def float32_unless_a_test_says_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests compare numbers computed in float32, whatever FLOWERS_PRECISION the caller exported; a test of
    another precision sets the variable itself (``monkeypatch.setenv`` after this fixture wins)."""
    monkeypatch.setenv("FLOWERS_PRECISION", "float32")
    monkeypatch.delenv("FLOWERS_DEVICE", raising=False)  # device=None means auto unless a test sets it


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny slice (6 classes, 4/2/2 images of 64 px), generated once. Do not modify it."""
    return make_tiny_flowers(tmp_path_factory.mktemp("data") / "tiny", image_size=IMAGE_SIZE,
                             images_per_split=TINY_COUNTS)


@pytest.fixture(scope="session")
def micro_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An even smaller slice (3 classes "1", "10", "2"; 2/1/1 images of 64 px) for tests that push every
    image through a real network, such as the command line's. Do not modify it."""
    return make_tiny_flowers(tmp_path_factory.mktemp("data") / "micro", num_classes=3, image_size=IMAGE_SIZE,
                             images_per_split=(2, 1, 1))


@pytest.fixture
def tiny_copy(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny slice that a test may break."""
    return Path(shutil.copytree(tiny_root, tmp_path / "tiny"))


def small_backbone(features: int = 8) -> nn.Module:
    """A few-hundred-parameter backbone: images -> (batch, features) vectors."""
    return nn.Sequential(nn.Conv2d(3, features, 3, stride=4), nn.AdaptiveAvgPool2d(1), nn.Flatten())


@pytest.fixture
def make_backbone() -> Callable[..., nn.Module]:
    """Factory for :func:`small_backbone`, seeded so that two calls give the same weights."""
    def make(features: int = 8, seed: int = 0) -> nn.Module:
        torch.manual_seed(seed)
        return small_backbone(features)
    return make


class NetworkAttempts(list):
    """Records every host a test tried to reach while the network was blocked."""


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> NetworkAttempts:
    """Make every outgoing connection fail at once, as on a machine without internet.

    Patches ``socket.create_connection`` (used by ``helpers.download.can_reach``, urllib
    and torch.hub) and ``socket.getaddrinfo``; the returned list records the attempts.
    """
    attempts = NetworkAttempts()

    def refuse_connection(address, *args, **kwargs):
        attempts.append(address)
        raise OSError(f"network blocked by the test (tried {address})")

    def refuse_lookup(host, *args, **kwargs):
        attempts.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "network blocked by the test")

    monkeypatch.setattr(socket, "create_connection", refuse_connection)
    monkeypatch.setattr(socket, "getaddrinfo", refuse_lookup)
    return attempts


@contextlib.contextmanager
def _time_limit(seconds: int = 60) -> Iterator[None]:
    """Fail with ``TimeoutError`` instead of hanging forever (a guard, not a speed test)."""
    def give_up(signum, frame):
        raise TimeoutError(f"still running after {seconds} s: this would hang")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def hang_guard() -> Callable[[int], contextlib.AbstractContextManager]:
    """``with hang_guard(30): ...`` raises ``TimeoutError`` if the block would hang."""
    return _time_limit


@pytest.fixture
def torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private torch cache (``TORCH_HOME``): no real downloaded weights are seen."""
    home = tmp_path / "torch-home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # in case something called torch.hub.set_dir
    return home


@pytest.fixture
def fake_imagenet_weights(torch_home: Path) -> Callable[..., nn.Module]:
    """Factory: save a randomly initialised torchvision model's state dict where torch's hub
    cache looks for its pretrained weights (in the private ``TORCH_HOME``); returns that model."""
    import torchvision

    from helpers.model import weights_file

    def place(name: str = "resnet18", seed: int = 1) -> nn.Module:
        torch.manual_seed(seed)
        stand_in = torchvision.models.get_model(name, weights=None)
        with torch.no_grad():
            for buffer in stand_in.buffers():
                if buffer.is_floating_point():
                    buffer.uniform_(0.5, 1.5)  # recognisable batch-norm statistics too
        path = weights_file(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(stand_in.state_dict(), path)
        return stand_in
    return place
