"""User-facing errors: one line, exit status 2, raised before any training starts."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence

# What a program killed by SIGPIPE reports (128 + 13), as `cat` or `grep` do at the head of a
# pipe: a shell with `set -o pipefail` treats us like them, and a truncated listing is never
# mistaken for a complete one.
EXIT_BROKEN_PIPE = 141


# What a program ended by SIGTERM reports (128 + 15); Ctrl-C (SIGINT) is 130.
EXIT_TERMINATED = 143
EXIT_INTERRUPTED = 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be so the same clean-up runs; exits 143."""


def interrupt_code(exc: BaseException) -> int:
    """130 for Ctrl-C, 143 for SIGTERM (``Terminated``)."""
    return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED


class UserError(Exception):
    """A mistake in the user's input (config, data, command line).

    The CLIs print ``error: <message>`` on one line and exit with status 2.
    """


class ConfigError(UserError):
    """An invalid trainer config key or value."""


class DataError(UserError):
    """A missing, malformed or unreadable dataset."""


class ModelError(UserError):
    """A model that cannot be built (unknown name, weights unavailable)."""


def one_line(text: str) -> str:
    """``text`` with its line breaks folded into spaces: an error is one line."""
    return " ".join(part.strip() for part in str(text).splitlines() if part.strip())


def describe_os_error(exc: OSError) -> str:
    """``<path>: <reason>`` (``No space left on device``, ``Permission denied``, ...)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.filename is None:
        return reason
    where = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {os.fsdecode(exc.filename2)}"
    return f"{where}: {reason}"


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # A warning for the user is about their input; where in our code it was raised is noise.
    with contextlib.suppress(OSError):
        print(f"warning: {one_line(str(message))}", file=sys.stderr)


@contextlib.contextmanager
def _one_line_warnings() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.showwarning = _print_warning
        yield


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def _error(message: str) -> None:
    with contextlib.suppress(OSError):
        print(f"error: {one_line(message)}", file=sys.stderr)


def cli_exit(run: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None = None) -> None:
    """Run a CLI entry point and exit with its status.

    - a ``UserError`` is one ``error:`` line and exit status 2;
    - an ``OSError`` that escapes (disk full, no permission, read-only file system) is one
      ``error:`` line naming the path and the reason, exit status 2;
    - a closed output pipe (``handreid inspect ... | head -1``) ends quietly with
      ``EXIT_BROKEN_PIPE`` (141), no traceback;
    - Ctrl-C is ``interrupted`` and 130; SIGTERM (``Terminated``) is ``terminated`` and 143;
    - warnings are printed as one ``warning:`` line each.
    """
    with _one_line_warnings():
        try:
            code = run(argv)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        except BrokenPipeError:  # before OSError: it is one
            _silence_stdout()
            code = EXIT_BROKEN_PIPE
        except UserError as exc:
            _error(str(exc))
            code = 2
        except OSError as exc:
            _error(describe_os_error(exc))
            code = 2
        except KeyboardInterrupt as exc:
            with contextlib.suppress(OSError):
                print(
                    "terminated" if isinstance(exc, Terminated) else "interrupted", file=sys.stderr
                )
            code = interrupt_code(exc)
            _exit_past_stuck_threads(code)
    sys.exit(code)


def _exit_past_stuck_threads(code: int) -> None:
    """End the process now when a thread is still running after Ctrl-C or SIGTERM: the
    interpreter's exit would wait for it, and one blocked in a system call (an open() of a FIFO,
    a hung network file system) never returns, so the command would never end."""
    import threading

    main = threading.main_thread()
    if any(t is not main and t.is_alive() and not t.daemon for t in threading.enumerate()):
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
