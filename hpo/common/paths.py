"""Where the project writes for a study, and how: folder names that stay under the output root,
and atomic file writes that respect the target and the umask.

A study name comes from whoever created the study, possibly another user of a shared database,
so it is never used as a path as it is: ``study_dir`` maps any name to one folder directly under
``studies/``.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from handreid.errors import UserError

STUDIES_DIR = Path("studies")
# A plain name is used as one folder name as it is; 100 characters keep every folder (and the
# temporary files beside what we write in it) far below the 255-byte name limit of ext4, XFS,
# APFS and NTFS, and keep names readable in `hpo ls` and the dashboard.
MAX_NAME = 100
_PLAIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{p}{i}" for p in ("COM", "LPT") for i in range(10)
}


def check_study_name(name: str) -> str:
    """A new study's name, or a one-line UserError saying what is wrong with it."""
    if not name:
        raise UserError("--study: the study name is empty")
    shown = repr(name) if len(name) <= 60 else repr(name[:60]) + "..."
    if len(name) > MAX_NAME:
        raise UserError(
            f"--study {shown}: {len(name)} characters; at most {MAX_NAME} (names become folder names)"
        )
    if "/" in name or "\\" in name:
        raise UserError(f"--study {shown}: no '/' or '\\' (names become folder names)")
    if ".." in name:
        raise UserError(f"--study {shown}: no '..' (names become folder names)")
    bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cf", "Cs", "Zl", "Zp")), None)
    if bad is not None:
        raise UserError(f"--study {shown}: control character {bad!r} in the name")
    if name != name.strip():
        raise UserError(f"--study {shown}: the name starts or ends with white space")
    return name


def study_folder(name: str) -> str:
    """One safe folder name for any study name.

    A plain name (letters, digits, ``.``, ``_``, ``-``; not hidden, not a reserved device name,
    not a name the project uses in ``studies/``, at most ``MAX_NAME`` characters) is its own
    folder, as users expect. Any other name becomes an
    ASCII slug plus 10 hex digits of its SHA-256, so two names never share a folder and no
    name can leave ``studies/``.
    """
    if (
        _PLAIN.fullmatch(name)
        and len(name) <= MAX_NAME
        and name.upper() not in _WINDOWS_RESERVED
        and name != "artifacts"  # what else studies/ holds: artifact store, storages, demo data
        and not name.startswith(("handreid.", "synthetic-"))
    ):
        return name
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", ascii_name).strip(".-_")[:48] or "study"
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return f"{slug}-{digest}"


def study_dir(name: str, root: Path = STUDIES_DIR) -> Path:
    """``root/<study_folder(name)>``: where the project writes a study's files."""
    return root / study_folder(name)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def check_target(path: str | Path, what: str = "--out") -> Path:
    """The file that writing ``path`` would replace (links followed), checked without writing
    anything: a target that exists and is not a regular file (directory, device, FIFO, socket)
    is refused, and so is a link whose target's folder does not exist (its folders are never
    created: they may lie anywhere). A one-line UserError names the path."""
    given = Path(path)
    try:
        st = os.stat(given)  # the kernel follows links, /proc's magic ones (/dev/stdout) included
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise UserError(f"{what} {given}: {exc.strerror or exc}") from None
    target = given.resolve()
    if st is not None and not stat.S_ISREG(st.st_mode):
        shown = given if given == target else f"{given} (-> {target})"
        raise UserError(f"{what} {shown} is {_kind(st.st_mode)}; give the path of a file")
    if st is None and given.is_symlink() and not target.parent.is_dir():
        raise UserError(
            f"{what} {given} is a link to {target}, whose folder {target.parent} does not "
            "exist; nothing was created (make the folder, or give another path)"
        )
    return target


def atomic_write(
    path: str | Path, write: Callable[[BinaryIO], None], *, what: str = "--out"
) -> Path:
    """Write the file ``path`` names with ``write(fh)``, atomically, and return where it went.

    Symbolic links are followed (the link stays, its target gets the content; see
    ``check_target`` for what is refused). Missing folders of ``path`` itself are created,
    never those of a link's target. A new file gets the mode the umask allows (as ``open``
    would); a replaced file keeps its mode. Errors are one-line UserErrors; no temporary file
    remains.
    """
    given = Path(path)
    target = check_target(given, what)
    mode = stat.S_IMODE(os.stat(target).st_mode) if target.is_file() else None
    if not given.is_symlink():
        try:
            given.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"{what} {given}: cannot create folder {given.parent}: {exc.strerror or exc}"
            ) from None
    from handreid.files import atomic_file

    try:
        with atomic_file(target) as fh:  # a new file gets the umask's mode
            if mode is not None:
                os.fchmod(fh.fileno(), mode)  # a replaced one keeps its own
            write(fh)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            reason += " (the disk is full)"
        raise UserError(f"{what} {given}: cannot write: {reason}") from None
    return target


def atomic_write_text(path: str | Path, text: str, *, what: str = "--out") -> Path:
    """``atomic_write`` of UTF-8 text."""
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")), what=what)
