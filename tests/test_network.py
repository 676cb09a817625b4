"""helpers.network.can_reach: a quick yes/no, never a hang."""

from __future__ import annotations

import contextlib
import socket

from helpers.network import OfflineError, can_reach


def test_reachable_host(monkeypatch):
    calls = []

    def connect(address, timeout=None):
        calls.append((address, timeout))
        return contextlib.nullcontext()

    monkeypatch.setattr(socket, "create_connection", connect)
    assert can_reach("https://example.org/some/file.tgz", timeout=1.5) is True
    assert can_reach("http://example.org:8080/") is True
    assert calls == [(("example.org", 443), 1.5), (("example.org", 8080), 3.0)]


def test_unreachable_host(no_network):
    assert can_reach("https://www.robots.ox.ac.uk/~vgg/data/flowers/102/") is False
    assert no_network  # it did try, and the failure was turned into False


def test_timeout_is_false_not_an_exception(monkeypatch):
    def slow(address, timeout=None):
        raise socket.timeout("timed out")

    monkeypatch.setattr(socket, "create_connection", slow)
    assert can_reach("https://download.pytorch.org/models/") is False


def test_offline_error_is_a_runtime_error():
    assert issubclass(OfflineError, RuntimeError)
