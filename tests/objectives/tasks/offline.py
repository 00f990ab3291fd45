"""Tests of real models run offline: every internet connection is refused and recorded."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def refused_connections(attempts: list[object]) -> Iterator[list[object]]:
    """While inside, an internet connection raises and its address goes to ``attempts``;
    on the way out, asserts that none was made."""
    original = socket.socket.connect

    def refuse(self: socket.socket, address: object) -> None:
        if self.family in (socket.AF_INET, socket.AF_INET6):
            attempts.append(address)
            raise OSError("network access attempted in an offline test")
        return original(self, address)

    socket.socket.connect = refuse  # type: ignore[method-assign]
    try:
        yield attempts
    finally:
        socket.socket.connect = original  # type: ignore[method-assign]
    assert attempts == [], f"network connections attempted: {attempts}"
