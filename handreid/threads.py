"""``thread_map``: ``ThreadPoolExecutor.map`` that lets Ctrl-C and SIGTERM end the command.

Leaving ``with ThreadPoolExecutor()`` waits for every running task, and a task blocked in a
system call (a read from a hung network file system, a device) never returns, so the
interrupted command would never end. On an interrupt the pool is left without waiting; the
CLI's exit (``handreid.errors.cli_exit``) then ends the process past the stuck thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def thread_map(fn: Callable[[T], R], items: Iterable[T], workers: int | None) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` threads (None: Python's default count)."""
    pool = ThreadPoolExecutor(workers)
    try:
        out = list(pool.map(fn, items))
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: do not wait for a task that may never end
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    except BaseException:  # the caller cleans up after the running tasks have finished
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return out
