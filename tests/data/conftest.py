from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


@pytest.fixture
def mkfifo() -> Iterator[Callable[[Path], Path]]:
    """``mkfifo(path)`` makes a FIFO; a test that opens one fails after 30 s instead of hanging.

    open() for reading waits for a writer, in a decoding thread out of a signal's reach, so on
    the alarm this fixture becomes that writer and then fails the test."""
    fifos: list[Path] = []

    def make(path: Path) -> Path:
        os.mkfifo(path)
        fifos.append(path)
        return path

    def expired(signum, frame):
        for fifo in fifos:
            with contextlib.suppress(OSError):
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        raise TimeoutError("a FIFO among the images was opened, and blocked")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(30)
    try:
        yield make
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
