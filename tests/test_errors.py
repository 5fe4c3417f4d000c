"""``cli_exit``: what the user sees when a command fails, is interrupted or loses its reader."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import warnings

import pytest

from handreid.errors import EXIT_BROKEN_PIPE, DataError, cli_exit


def exit_of(run, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        cli_exit(run, [])
    out, err = capsys.readouterr()
    return exc.value.code, out, err


def raising(exc: BaseException):
    def run(argv):
        raise exc

    return run


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EACCES, "Permission denied"),
        (errno.EROFS, "Read-only file system"),
        (errno.EIO, "Input/output error"),
    ],
)
def test_an_escaping_os_error_is_one_line_with_path_and_reason(capsys, code, reason):
    status, out, err = exit_of(raising(OSError(code, reason, "/data/run/best.pt")), capsys)
    assert status == 2 and out == ""
    assert err == f"error: /data/run/best.pt: {reason}\n"


def test_os_error_without_a_path_and_with_two(capsys):
    assert exit_of(raising(OSError(errno.ENOSPC, "No space left on device")), capsys)[2] == (
        "error: No space left on device\n"
    )
    two = OSError(errno.EXDEV, "Invalid cross-device link", "/a", None, "/b")
    assert exit_of(raising(two), capsys)[2] == "error: /a -> /b: Invalid cross-device link\n"


def test_user_error_is_one_line_even_with_line_breaks(capsys):
    status, _, err = exit_of(raising(DataError("first\n  second\n")), capsys)
    assert status == 2 and err == "error: first second\n"


def test_interrupt_and_success(capsys):
    assert exit_of(raising(KeyboardInterrupt()), capsys)[:3:2] == (130, "interrupted\n")
    assert exit_of(lambda argv: 0, capsys)[0] == 0


def test_warnings_are_one_line_each(capsys):
    def run(argv):
        warnings.warn("warmup_epochs=3 >= epochs=3:\nno cosine phase", UserWarning, stacklevel=1)
        return 0

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        status, _, err = exit_of(run, capsys)
    assert status == 0 and err == "warning: warmup_epochs=3 >= epochs=3: no cosine phase\n"


def test_other_exceptions_still_show_their_traceback(capsys):
    with pytest.raises(ZeroDivisionError):  # a bug must stay visible, not become a user error
        cli_exit(raising(ZeroDivisionError("bug")), [])


# ---- a reader that goes away: `... | head -1` -------------------------------------------------
LOTS = """
from handreid.errors import cli_exit

def run(argv):
    for i in range(200_000):  # megabytes: more than a pipe buffer holds
        print("line", i)
    return 0

cli_exit(run)
"""


def test_head_of_a_pipe_ends_quietly(tmp_path):
    """The shell idiom itself, `producer | head -1`, with the producer's status and stderr."""
    script = tmp_path / "lots.py"
    script.write_text(LOTS)
    pipeline = f'"{sys.executable}" "{script}" 2>err.txt | head -1; echo "${{PIPESTATUS[0]}}"'
    done = subprocess.run(
        ["bash", "-c", pipeline], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    first, status = done.stdout.splitlines()
    assert first == "line 0"
    assert int(status) == EXIT_BROKEN_PIPE
    assert (tmp_path / "err.txt").read_text() == ""  # no traceback, no "Exception ignored"


def test_inspect_into_a_closed_pipe(tmp_path):
    from handreid.data.synthetic import write_synthetic

    data = write_synthetic(tmp_path / "s", ids=6, per_id=2, size=24)
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before anything is written: every write fails
    try:
        done = subprocess.run(
            [sys.executable, "-m", "handreid.cli", "inspect", "--data", str(data)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == EXIT_BROKEN_PIPE
    assert done.stderr.decode() == ""
