"""Files written whole or not at all: ``atomic_file`` and the run folder of ``handreid train``
(config.yaml, metrics.json, best.pt). No torch here: the CLIs check an output folder before
the model libraries load."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from handreid.errors import UserError, describe_os_error


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """Open a temporary sibling of ``path`` for writing; rename it over ``path`` on success.

    On any failure (disk full, I/O error, Ctrl-C) the temporary file is removed and ``path``
    keeps what it held before. The file gets the umask's mode, as ``open`` would give it.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())  # the bytes reach the disk before the name does
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is None:  # torch's writer drops the name; say which file it was
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# ---- the run folder: config.yaml, metrics.json, best.pt ---------------------------------------
RUN_FILES = ("config.yaml", "metrics.json", "best.pt")


def check_checkpoint_path(path: str | Path) -> None:
    """A checkpoint that is missing (or is no regular file) is refused before torch loads."""
    if not Path(path).is_file():
        raise UserError(f"checkpoint not found: {path}")


def check_run_folder(out: str | Path, overwrite: bool = False) -> None:
    """Refuse, before any training, an ``--out`` that writing the run would clobber.

    A file is refused; so is a folder holding anything but a run's files; an earlier run is
    refused unless ``overwrite``. A folder that does not exist yet must be creatable.
    """
    out = Path(out)
    if out.is_symlink() and not out.exists():
        raise UserError(
            f"--out {out} is a link to {out.resolve()}, which does not exist; nothing was "
            "created (a link's target folders are never made: give a folder)"
        )
    if out.exists():
        if not out.is_dir():
            raise UserError(f"--out {out} is a file; give a folder for the run")
        entries = sorted(p.name for p in out.iterdir())
        foreign = [name for name in entries if name not in RUN_FILES]
        if foreign:
            raise UserError(
                f"--out {out} holds {foreign[0]!r}, which no handreid run writes; choose a new "
                "folder (--overwrite replaces only an earlier run)"
            )
        if entries and not overwrite:
            raise UserError(
                f"--out {out} already holds a run; pass --overwrite to replace it or choose "
                "another folder"
            )
        return
    parent = out.resolve().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {out}: cannot create it in {parent} (permission denied)")


def write_run_folder(
    out: str | Path, write: Callable[[Path], None], *, overwrite: bool = False
) -> Path:
    """Fill a run folder all at once: ``write(folder)`` writes into a hidden sibling of ``out``,
    which is renamed to ``out`` when complete.

    Any failure (disk full, I/O error, Ctrl-C) removes the sibling and every folder created
    for it, so ``out`` is either the whole new run or what it was before; an ``OSError``
    becomes one ``UserError`` line naming the path and the reason. Returns ``out``.
    """
    out = Path(out)
    check_run_folder(out, overwrite)  # again: a folder may have appeared while training ran
    target = out.resolve()
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()
        write(tmp)
        _swap_in(tmp, target)
    except OSError as exc:
        where = _as_final(exc, tmp, out)
        raise UserError(f"cannot write the run folder {out}: {describe_os_error(where)}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # gone already after a successful swap
        if not target.exists():
            for folder in created:  # deepest first; stop at the first one that is not empty
                try:
                    folder.rmdir()
                except OSError:
                    break
    return out


def _as_final(exc: OSError, tmp: Path, out: Path) -> OSError:
    """``exc`` naming the file it would have become (``out/best.pt``), not its temporary."""
    if exc.filename is None:
        return exc
    try:
        rel = Path(os.fsdecode(exc.filename)).relative_to(tmp)
    except ValueError:
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(out / rel))


def _swap_in(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``; an earlier run there is moved aside first, then removed."""
    if not (target.is_dir() and any(target.iterdir())):
        os.replace(new, target)  # rename() replaces an empty folder
        return
    old = target.with_name(f".{target.name}.{os.getpid()}.{secrets.token_hex(4)}.old")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
