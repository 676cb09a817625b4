"""Is the internet there? Answer in seconds, so offline runs fail fast with advice, not a hang."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse


class OfflineError(RuntimeError):
    """Something needs a download, the network is not reachable, and the message says what to do."""


def can_reach(url: str, timeout: float = 3.0) -> bool:
    """True if a TCP connection to ``url``'s host opens within ``timeout`` seconds."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    answer: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((parsed.hostname, port), timeout=timeout):
                answer.append(True)
        except OSError:
            answer.append(False)

    # The socket timeout does not cover the DNS lookup, which can hang on a broken network:
    # a daemon thread with a deadline bounds the whole attempt.
    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout * 2)
    return bool(answer and answer[0])
