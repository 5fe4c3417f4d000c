"""Synthetic hands in the 11k Hands layout, for tests and demos without downloads.

Each subject has its own hand geometry (palm size and shape, finger lengths, widths and
spread), skin tone, moles, palm creases, and possibly nail polish and a ring. Each image adds
its own pose (rotation, translation, scale, finger spread), lighting, background and noise.
The four aspects show the same subject: dorsal views carry nails, knuckles and moles, palmar
views carry a lighter palm with creases; left hands are mirrored. Identity is carried by shape
and texture, not by a colour patch, so a small model learns it in a few epochs but not at once.

Output is byte-identical for the same arguments.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from handreid.config import ASPECTS
from handreid.data.hands11k import COLUMNS, CSV_NAME, IMAGE_DIR
from handreid.errors import DataError
from handreid.threads import thread_map

STAMP = ".handreid-synth"  # marks a folder this module wrote; holds the arguments as JSON
_SUPERSAMPLE = 2  # draw at twice the size, then average 2x2 blocks (cheap anti-aliasing)
_FAIR, _DARK = np.array([236.0, 201.0, 178.0]), np.array([92.0, 60.0, 44.0])
_FINGER_LEN = np.array([0.20, 0.27, 0.30, 0.28, 0.22])  # thumb, index, middle, ring, little
_FINGER_ANGLE = np.array([-58.0, -16.0, -5.0, 6.0, 17.0])  # degrees from "up", thumb side < 0


@dataclass(frozen=True)
class _Subject:
    palm_w: float
    palm_h: float
    palm_round: float
    lengths: np.ndarray  # (5,) fractions of the image side
    widths: np.ndarray  # (5,)
    angles: np.ndarray  # (5,) degrees
    tone: np.ndarray  # (3,) RGB
    polish: tuple[int, int, int] | None
    ring: tuple[int, tuple[int, int, int]] | None  # finger, colour
    moles: np.ndarray  # (m, 2) positions in palm units
    creases: np.ndarray  # (3, 3) palm-line offsets
    age: int
    gender: str


def _subject(rng: np.random.Generator) -> _Subject:
    t = rng.uniform(0, 1)
    tone = (1 - t) * _FAIR + t * _DARK + rng.normal(0, 12, 3)  # undertones: red, olive, ...
    polish = tuple(int(v) for v in rng.integers(20, 235, 3)) if rng.random() < 0.25 else None
    ring = None
    if rng.random() < 0.3:
        ring = (int(rng.choice([2, 3, 3, 4])), tuple(int(v) for v in rng.integers(120, 255, 3)))
    return _Subject(
        palm_w=rng.uniform(0.24, 0.34),
        palm_h=rng.uniform(0.26, 0.36),
        palm_round=rng.uniform(2.2, 4.0),
        lengths=_FINGER_LEN * rng.uniform(0.85, 1.15) * rng.uniform(0.88, 1.12, 5),
        widths=np.array([0.075, 0.06, 0.062, 0.058, 0.05])
        * rng.uniform(0.8, 1.25)
        * rng.uniform(0.9, 1.1, 5),
        angles=_FINGER_ANGLE * rng.uniform(0.7, 1.4) + rng.normal(0, 3, 5),
        tone=np.clip(tone, 30, 250),
        polish=polish,
        ring=ring,
        moles=rng.uniform(-0.4, 0.4, (int(rng.integers(1, 5)), 2)),
        creases=rng.uniform(-0.12, 0.12, (3, 3)),
        age=int(rng.integers(18, 76)),
        gender=str(rng.choice(["male", "female"])),
    )


class _Canvas:
    """Maps hand coordinates (palm centre at 0, fingers along +y, image side = 1) to pixels."""

    def __init__(self, size: int, angle: float, scale: float, shift: np.ndarray, mirror: bool):
        self.n = size * _SUPERSAMPLE
        c, s = math.cos(angle), math.sin(angle)
        # Mirror x for the mirrored views and flip y (hand "up" is image rows going down).
        flip = np.diag([-1.0 if mirror else 1.0, -1.0])
        self.m = (np.array([[c, -s], [s, c]]) * scale * self.n @ flip).T
        self.origin = (np.array([0.5, 0.58]) + shift) * self.n
        self.scale = scale

    def px(self, pts: np.ndarray) -> list[tuple[float, float]]:
        return list(map(tuple, (np.reshape(pts, (-1, 2)) @ self.m + self.origin).tolist()))

    def len(self, v: float) -> float:
        return v * self.scale * self.n


def _fingers(sub: _Subject, spread: np.ndarray) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """(base, tip, width) per finger, thumb first, in hand coordinates."""
    out = []
    for i in range(5):
        if i == 0:
            base = np.array([-0.5 * sub.palm_w, -0.05 * sub.palm_h])
        else:
            base = np.array([(-0.38 + 0.25 * (i - 1)) * sub.palm_w, 0.45 * sub.palm_h])
        a = math.radians(sub.angles[i] + spread[i])
        tip = base + sub.lengths[i] * np.array([math.sin(a), math.cos(a)])
        out.append((base, tip, sub.widths[i]))
    return out


def _palm(sub: _Subject) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    e = 2.0 / sub.palm_round
    x = np.sign(np.cos(t)) * np.abs(np.cos(t)) ** e * sub.palm_w / 2
    y = np.sign(np.sin(t)) * np.abs(np.sin(t)) ** e * sub.palm_h / 2
    return np.stack([x, y], 1)


def _capsule(draw: ImageDraw.ImageDraw, cv: _Canvas, a, b, width: float, fill) -> None:
    w = cv.len(width)
    (ax, ay), (bx, by) = cv.px(a)[0], cv.px(b)[0]
    draw.line([(ax, ay), (bx, by)], fill=fill, width=max(1, round(w)))
    for x, y in ((ax, ay), (bx, by)):
        draw.ellipse([x - w / 2, y - w / 2, x + w / 2, y + w / 2], fill=fill)


def _draw_hand(
    img: Image.Image, cv: _Canvas, sub: _Subject, aspect: str, rng, ring_on: bool
) -> None:
    draw = ImageDraw.Draw(img)
    palmar = aspect.startswith("palmar")
    skin = sub.tone * (1.08 if palmar else 1.0) + (np.array([8, -4, -4]) if palmar else 0)
    col = tuple(int(v) for v in np.clip(skin, 0, 255))
    dark = tuple(int(v) for v in np.clip(skin * 0.72, 0, 255))
    fingers = _fingers(sub, rng.normal(0, 4, 5))
    w, h = sub.palm_w, sub.palm_h
    wrist = np.array(
        [[-0.36 * w, -0.3 * h], [0.36 * w, -0.3 * h], [0.4 * w, -1.2], [-0.4 * w, -1.2]]
    )
    draw.polygon(cv.px(wrist), fill=col)
    for base, tip, width in fingers:  # outline first: a darker rim makes the fingers separable
        _capsule(draw, cv, base, tip, width + 0.008, dark)
    draw.polygon(cv.px(_palm(sub)), fill=col)
    for base, tip, width in fingers:
        _capsule(draw, cv, base, tip, width, col)
    if palmar:
        _palm_marks(draw, cv, sub, fingers, dark)
    else:
        _dorsal_marks(draw, cv, sub, fingers, skin, dark)
    if ring_on and sub.ring is not None:
        finger, colour = sub.ring
        base, tip, width = fingers[finger]
        at = base + 0.3 * (tip - base)
        normal = np.array([-(tip - base)[1], (tip - base)[0]]) / np.linalg.norm(tip - base)
        ends = cv.px(np.stack([at - normal * width * 0.6, at + normal * width * 0.6]))
        draw.line(ends, fill=colour, width=max(2, round(cv.len(0.018))))


def _dorsal_marks(draw, cv: _Canvas, sub: _Subject, fingers, skin, dark) -> None:
    nail = tuple(
        int(v)
        for v in (sub.polish or np.clip(skin * 0.6 + np.array([255, 215, 205]) * 0.4, 0, 255))
    )
    for base, tip, width in fingers:
        d = (tip - base) / np.linalg.norm(tip - base)
        c = cv.px(tip - d * width * 0.35)[0]
        r = cv.len(width) * 0.3
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=nail)
        k = base + 0.55 * (tip - base)  # knuckle wrinkle
        n = np.array([-d[1], d[0]]) * width * 0.3
        draw.line(cv.px(np.stack([k - n, k + n])), fill=dark, width=max(1, round(cv.len(0.006))))
    for mx, my in sub.moles:
        c = cv.px(np.array([mx * sub.palm_w, my * sub.palm_h]))[0]
        r = cv.len(0.016)
        draw.ellipse([c[0] - r, c[1] - r, c[0] + r, c[1] + r], fill=(70, 45, 35))


def _palm_marks(draw, cv: _Canvas, sub: _Subject, fingers, dark) -> None:
    w, h = sub.palm_w, sub.palm_h
    for i, (a, b, c) in enumerate(sub.creases):  # three palm lines, curved per subject
        y0 = (0.25 - 0.22 * i) * h
        xs = np.linspace(-0.42, 0.42 - 0.2 * (i == 2), 8) * w
        ys = y0 + (a + b * xs / w + c * (xs / w) ** 2) * h
        draw.line(cv.px(np.stack([xs, ys], 1)), fill=dark, width=max(1, round(cv.len(0.007))))
    for base, tip, width in fingers[1:]:  # joint creases across each finger
        d = (tip - base) / np.linalg.norm(tip - base)
        n = np.array([-d[1], d[0]]) * width * 0.4
        for f in (0.35, 0.68):
            k = base + f * (tip - base)
            draw.line(
                cv.px(np.stack([k - n, k + n])), fill=dark, width=max(1, round(cv.len(0.005)))
            )


def _background(size: int, rng: np.random.Generator) -> Image.Image:
    n = size * _SUPERSAMPLE
    base = rng.uniform(150, 250) + rng.normal(0, 15, 3)  # light, mildly tinted, like a studio
    img = Image.new("RGB", (n, n), tuple(int(v) for v in np.clip(base, 0, 255)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 3))):  # low-contrast clutter
        x0, y0 = rng.uniform(-0.2, 1.0, 2) * n
        x1, y1 = x0 + rng.uniform(0.1, 0.5) * n, y0 + rng.uniform(0.1, 0.5) * n
        colour = tuple(int(v) for v in np.clip(base + rng.normal(0, 20, 3), 0, 255))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    return img


def _photo(
    size: int, sub: _Subject, aspect: str, rng: np.random.Generator, ring_on: bool
) -> Image.Image:
    img = _background(size, rng)
    cv = _Canvas(
        size,
        angle=math.radians(rng.normal(0, 8)),
        scale=rng.uniform(0.9, 1.08),
        shift=rng.uniform(-0.05, 0.05, 2),
        mirror=aspect in ("palmar right", "dorsal left"),  # thumb on the right in these views
    )
    _draw_hand(img, cv, sub, aspect, rng, ring_on)
    img = img.reduce(_SUPERSAMPLE)
    # Lighting: overall gain, a colour cast and a linear gradient in a random direction; noise.
    x = np.asarray(img, dtype=np.float32)
    g = np.linspace(-1, 1, size, dtype=np.float32)
    a = rng.uniform(0, 2 * math.pi)
    ramp = 1 + rng.uniform(0, 0.2) * (np.cos(a) * g[None, :] + np.sin(a) * g[:, None])
    gain = rng.uniform(0.85, 1.1) * rng.uniform(0.96, 1.04, 3).astype(np.float32)
    noise = rng.standard_normal(x.shape, dtype=np.float32) * np.float32(rng.uniform(1, 6))
    x = x * (ramp[:, :, None] * gain) + noise
    return Image.fromarray(np.clip(x, 0, 255).astype(np.uint8))


def _row(i: int, sub: _Subject, aspect: str, name: str, ring_on: bool) -> list:
    tone = sub.tone.mean()
    skin = "fair" if tone > 170 else "medium" if tone > 115 else "dark"
    polish = int(sub.polish is not None)
    return [f"{i:07d}", sub.age, sub.gender, skin, int(ring_on), polish, aspect, name, 0]


def write_synthetic(
    out: str | Path,
    ids: int,
    per_id: int,
    size: int = 96,
    seed: int = 0,
    *,
    force: bool = False,
) -> Path:
    """Write ``ids`` subjects x 4 aspects x ``per_id`` images in the 11k layout under ``out``.

    ``out/HandInfo.csv`` has the official columns (ids as 7-digit strings); images are
    ``out/Hands/Hand_XXXXXXX.jpg`` (``size`` x ``size``, JPEG quality 90). Subjects with a ring
    wear it (``accessories = 1``) in images 3, 5, 7, ... of each aspect, so every subject keeps
    images when accessories are excluded. Returns ``Path(out)``.

    ``out`` must be new or empty: a folder that holds anything else is refused untouched (it
    may be a real 11k copy). ``force=True`` replaces a set this function wrote before: only
    the files its ``STAMP`` lists (name, size, SHA-256), unchanged, and nothing else; a folder
    holding anything more is refused untouched, so a stamp copied into real data deletes
    nothing.
    """
    if ids < 1 or per_id < 1:
        raise DataError(f"ids={ids} and per_id={per_id} must both be at least 1")
    if not 16 <= size <= 2048:
        raise DataError(f"size={size} is out of range; allowed [16, 2048]")
    if seed < 0:
        raise DataError(f"seed={seed} must be a non-negative integer")
    out = Path(out)
    old = _clear_for_writing(out, force)
    target = out.resolve() if out.is_symlink() else out  # a link to a folder: write there
    created = [p for p in (target.parent, *target.parent.parents) if not p.exists()]
    # Written whole in a hidden sibling, then renamed into place: a set cut short (disk full,
    # Ctrl-C) never reaches ``out``, and the stamp always lists every file it holds.
    tmp = target.parent / f".{target.name}.{os.getpid()}.synth.tmp"
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _write_set(tmp, ids, per_id, size, seed)
            for path in old:  # checked by _clear_for_writing: files synth wrote, unchanged
                path.unlink()
            if old and (out / IMAGE_DIR).is_dir():
                (out / IMAGE_DIR).rmdir()
            os.replace(tmp, target)  # replaces an empty folder
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException as exc:
        for folder in created:  # deepest first; only the folders this call made, if empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        if isinstance(exc, OSError):
            raise DataError(_write_failed(out, tmp, exc)) from None
        raise
    return out


def _write_failed(out: Path, tmp: Path, exc: OSError) -> str:
    """One line naming the file that could not be written as the user knows it: under ``out``,
    not under the hidden temporary folder."""
    where = os.fsdecode(exc.filename) if exc.filename is not None else str(out)
    with contextlib.suppress(ValueError):
        where = str(out / Path(where).relative_to(tmp))
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"cannot write the synthetic set {out}: {where}: {reason}; no partial set was left"


def _write_file(path: Path, data: bytes) -> None:
    """``path.write_bytes(data)``; an error while writing (a full disk) names ``path``, which
    ``write()`` on an open file does not."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(path)
        raise


def _digest(data: bytes) -> list:
    return [len(data), hashlib.sha256(data).hexdigest()]


def _write_set(out: Path, ids: int, per_id: int, size: int, seed: int) -> None:
    out.mkdir()
    (out / IMAGE_DIR).mkdir()
    subjects = [_subject(np.random.default_rng([seed, i])) for i in range(ids)]
    jobs = [(i, a, n) for i in range(ids) for a in range(len(ASPECTS)) for n in range(per_id)]
    files: dict[str, list] = {}

    def make(number: int) -> list:
        i, a, n = jobs[number]
        sub, aspect = subjects[i], ASPECTS[a]
        ring_on = sub.ring is not None and n >= 3 and n % 2 == 1
        name = f"Hand_{number:07d}.jpg"
        photo = _photo(size, sub, aspect, np.random.default_rng([seed, i, a, n, 1]), ring_on)
        buffer = io.BytesIO()
        photo.save(buffer, format="JPEG", quality=90)
        data = buffer.getvalue()
        _write_file(out / IMAGE_DIR / name, data)
        files[f"{IMAGE_DIR}/{name}"] = _digest(data)
        return _row(i, sub, aspect, name, ring_on)

    # Every image depends only on (seed, subject, aspect, n): threads keep the bytes identical
    # and overlap file writes and JPEG encoding, which release the GIL.
    rows = thread_map(make, range(len(jobs)), min(4, os.cpu_count() or 1))
    text = io.StringIO(newline="")
    text.write(",".join(COLUMNS) + "\r\n")  # unquoted header, quoted strings: as the real file
    csv.writer(text, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\r\n").writerows(rows)
    data = text.getvalue().encode()
    _write_file(out / CSV_NAME, data)
    files[CSV_NAME] = _digest(data)
    # the stamp lists what synth wrote, by name, size and SHA-256: --force removes only those
    stamp = {
        "ids": ids,
        "per_id": per_id,
        "size": size,
        "seed": seed,
        "files": dict(sorted(files.items())),
    }
    _write_file(out / STAMP, (json.dumps(stamp) + "\n").encode())


def _stamp_files(out: Path) -> dict[str, list]:
    """The files the stamp in ``out`` lists, or a DataError when it lists none."""
    try:
        stamp = json.loads((out / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        stamp = None
    files = stamp.get("files") if isinstance(stamp, dict) else None
    if not isinstance(files, dict) or not files:
        raise DataError(
            f"{out} has a synth stamp that lists no files (written by an older synth, or "
            "copied); --force removes only files the stamp lists, so remove the set by hand "
            "(nothing was changed)"
        )
    return files


def _clear_for_writing(out: Path, force: bool) -> list[Path]:
    """Check that ``out`` may be (re)written: absent, empty, or (with ``force``) holding only
    the files an earlier ``write_synthetic`` wrote and listed in its stamp, unchanged (name,
    size, SHA-256). Returns those files, to be removed; nothing is removed here, so a refusal
    changes nothing.
    """
    if not (out.exists() or out.is_symlink()):
        return []
    if not out.is_dir():
        raise DataError(f"{out} is a file; synth writes a dataset folder (give a new or empty one)")
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return []
    if STAMP not in entries:
        raise DataError(
            f"{out} is not empty and was not written by synth; nothing was changed "
            "(give a new or empty folder)"
        )
    if not force:
        raise DataError(
            f"{out} holds a synthetic set written earlier; pass --force to replace it "
            "(nothing was changed)"
        )
    listed = _stamp_files(out)
    stamp = out / STAMP
    found: list[Path] = []
    foreign: list[str] = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path == stamp and path.is_file() and not path.is_symlink():
            continue
        if rel == IMAGE_DIR and path.is_dir() and not path.is_symlink():
            continue
        entry = listed.get(rel)
        if path.is_symlink() or not path.is_file() or not isinstance(entry, list):
            foreign.append(rel)
            continue
        if entry != _digest(path.read_bytes()):
            foreign.append(f"{rel} (changed since synth wrote it)")
            continue
        found.append(path)
    if foreign:
        raise DataError(
            f"{out} was written by synth but now also holds {foreign[0]}; --force replaces only "
            "what synth wrote, so move that away first (nothing was changed)"
        )
    return [*found, stamp]


__all__ = ["STAMP", "write_synthetic"]
