"""TrainConfig: the one flat, frozen trainer configuration.

A search-space parameter name *is* a key here, so an exported best config is just the base
config with the tuned keys replaced. Key names follow the ones the seed system's users know.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from handreid.errors import ConfigError, UserError

ASPECTS = ("dorsal right", "dorsal left", "palmar right", "palmar left")
MODEL_ALIASES = {"rn50": "RN50", "vitb16": "ViT-B-16"}
DATASETS = ("11k", "hd", "folder")
TEMPLATE_FIELDS = ("aspect",)
SEED_MAX = 2**32 - 1  # numpy's legacy seeding and many tools take 32-bit seeds


@dataclass(frozen=True)
class TrainConfig:
    # model
    model: str = "vitb16"
    pretrained: str = "openai"
    image_size: tuple[int, int] = (224, 224)
    unfreeze_blocks: int = 0
    transformer_layers: int = 3
    dropout: float = 0.1
    prompt_template: str = "A photo of a {} {aspect} hand."
    inference_prompt: str = "composed"
    classifier: str = "arcface"
    arcface_scale: float = 30.0
    arcface_margin: float = 0.35
    bnneck_reduction: bool = True
    bnneck_dim: int = 256
    # optimisation
    batch_size: int = 64
    num_instances: int = 4
    epochs: int = 30
    early_stop_patience: int = 5
    warmup_epochs: int = 2
    scheduler: str = "cosine"
    min_lr_ratio: float = 0.01
    lr_clip_visual: float = 1e-6
    lr_modules: float = 1e-4
    weight_decay: float = 1e-4
    max_norm: float = 1.0
    amp: bool = True
    compile: bool = False
    seed: int = 0  # initialisation, sampling, augmentation, dropout; never the identity split
    # losses
    loss_id_weight: float = 1.0
    label_smoothing: float = 0.1
    loss_tri_weight: float = 1.0
    triplet_margin: float = 0.3
    supcon_loss_weight: float = 0.5
    supcon_ramp: str = "linear"
    supcon_temperature: float = 0.07
    # augmentation (on the device, whole batches)
    flip_prob: float = 0.5
    pad: int = 10
    random_erasing: float = 0.5
    # data and protocol
    dataset: str = "11k"
    data_root: str = ""
    aspects: tuple[str, ...] = ("dorsal right",)
    exclude_accessories: bool = True
    split: str = "auto"
    split_seed: int = 0  # train/val/test identities, validation folds, query/gallery splits
    test_fraction: float = 0.5
    val_fraction: float = 0.15
    val_folds: int = 1  # K > 1: training-side identities in K disjoint validation folds
    val_fold: int = 0  # the fold this run validates on (0..val_folds-1)
    val_repeats: int = 1  # R > 1: a trial averages R training seeds (seed, seed+1, ...)
    refit: bool = False  # train on all training-side identities (no validation), report test
    # share of the training side's evaluable subjects set aside as confirm identities: no run
    # trains or validates on them, except a confirm run, which validates on them and nothing else
    confirm_fraction: float = 0.0
    confirm_run: bool = False  # train on every other training-side identity, measure on confirm
    num_splits: int = 10
    eval_ap: str = "standard"
    eval_batch_size: int = 256
    cache_dir: str = ""
    decode_workers: int = 0

    def __post_init__(self) -> None:
        _validate(self)

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping; unknown keys name the closest valid key."""
        if not isinstance(data, Mapping):
            raise ConfigError(
                f"{source}: expected a mapping of keys to values, got {type(data).__name__}"
            )
        kwargs = {}
        for key, value in data.items():
            _check_known(key, source)
            kwargs[key] = _coerce(key, value)
        return cls(**kwargs)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Iterable[str] = ()) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        data = load_yaml(path)
        if data is None or data == {}:
            # a truncated or wrong file would otherwise train hours of a model nobody asked for
            raise ConfigError(
                f"{path}: the config sets nothing (it is empty, only comments or {{}}), so every "
                f"key would take its default (model {cls.model}, pretrained {cls.pretrained}); "
                "a minimal config names at least the model, e.g. 'model: tiny-vit', and "
                "handreid/configs/*.yaml are complete examples"
            )
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys to values")
        data.update(parse_overrides(overrides))
        return cls.from_dict(data, source=str(path))

    def replace(self, **changes: Any) -> TrainConfig:
        for key in changes:
            _check_known(key, "override")
        return dataclasses.replace(self, **{k: _coerce(k, v) for k, v in changes.items()})

    # ---- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def to_yaml(self, header: str = "") -> str:
        body = yaml.safe_dump(
            self.to_dict(), sort_keys=False, allow_unicode=True, default_flow_style=None
        )
        lines = [f"# {line}" if line else "#" for line in header.splitlines()]
        return ("\n".join(lines) + "\n" if lines else "") + body

    def save(self, path: str | Path, header: str = "") -> None:
        Path(path).write_text(self.to_yaml(header))

    # ---- derived ------------------------------------------------------------------------
    @property
    def open_clip_name(self) -> str:
        return MODEL_ALIASES.get(self.model, self.model)

    @property
    def num_identities_per_batch(self) -> int:
        return self.batch_size // self.num_instances


KEYS = tuple(f.name for f in fields(TrainConfig))
_TYPES = {f.name: f.type for f in fields(TrainConfig)}


# ---- YAML ---------------------------------------------------------------------------------
class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A mapping that names one key twice (PyYAML keeps the last value without a word)."""

    def __init__(self, key: Any, mark: yaml.Mark | None, first: yaml.Mark | None) -> None:
        # context_mark: the first occurrence; problem_mark: the repeat
        super().__init__(None, first, f"found duplicate key {_show(key)}", mark)
        self.key = key
        self.line = mark.line + 1 if mark is not None else None


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping.

    Keys brought in by a merge (``<<: *base``) may be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Mark] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    first = seen.get(key)
                except TypeError:  # unhashable: the base class reports it
                    continue
                if key in seen:
                    raise DuplicateKeyError(key, key_node.start_mark, first)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        # PyYAML's scalar constructors let Python's errors escape for some input ('!!int' with
        # no digits, 2001-13-01, a 5,000-digit integer): report them with their line instead.
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, OverflowError, IndexError, KeyError, AttributeError) as exc:
            kind = str(node.tag).rsplit(":", 1)[-1]
            what = _show(node.value, 40) if isinstance(node, yaml.ScalarNode) else "this value"
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"cannot read {what} as {kind} ({_cut(str(exc))})",
                node.start_mark,
            ) from None


def parse_yaml(text: str, source: str = "<yaml>", *, error: type[UserError] = ConfigError) -> Any:
    """YAML text -> Python data, refusing duplicate keys; every failure is one ``error`` line.

    ``source`` names the text in messages (a path, ``--set``). Search-space files and trainer
    configs both read YAML through here, so both refuse a key given twice.
    """
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: builds no objects
    except DuplicateKeyError as exc:
        where = f" (line {exc.line})" if exc.line is not None else ""
        raise error(
            f"{source}: duplicate key {_show(exc.key)}{where}; each key may appear once"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        detail = f": {problem}" if problem else ""
        raise error(f"{source}: not valid YAML{where}{detail}") from None
    except RecursionError:
        raise error(f"{source}: not valid YAML: nested too deeply") from None
    except (ValueError, TypeError, OverflowError) as exc:  # outside a node, if ever
        raise error(f"{source}: not valid YAML: {_cut(str(exc))}") from None


def load_yaml(path: str | Path, *, error: type[UserError] = ConfigError) -> Any:
    """The YAML file at ``path`` (UTF-8), parsed by ``parse_yaml``; unreadable is one line.

    ``path`` may also be package data (an ``importlib.resources`` Traversable)."""
    path = path if hasattr(path, "read_bytes") else Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8"
        ) from None
    return parse_yaml(text, str(path), error=error)


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["lr_modules=1e-4", "aspects=[dorsal right]"]`` -> dict with YAML-typed values."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set expects key=value, got {_show(item)}")
        _check_known(key, "--set")
        try:
            value = parse_yaml(raw, "--set") if raw.strip() else ""
        except ConfigError:
            value = raw  # not YAML: the text itself (a prompt template with a colon, ...)
        out[key] = _coerce(key, value)
    return out


def _cut(text: str, limit: int = 120) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages about any input at all."""
    try:
        text = repr(value)
    except ValueError:  # an int past the interpreter's 4,300-digit conversion limit
        if isinstance(value, int):
            return f"<integer of {value.bit_length()} bits>"
        return f"<{type(value).__name__}>"
    except RecursionError:  # a self-containing list from YAML anchors
        return f"<nested {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_known(key: Any, source: str) -> None:
    if key in KEYS:
        return
    close = (
        difflib.get_close_matches(key[:200], KEYS, n=1, cutoff=0.5) if isinstance(key, str) else []
    )
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"{source}: unknown key {_show(key)}{hint}")


def _coerce(key: str, value: Any) -> Any:
    """Turn YAML values into the field's type, rejecting what does not fit."""
    kind = _TYPES[key]
    given = f"{key}={_show(value)}"
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{given}: expected true or false")
    if kind == "int":
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (isinstance(value, float) and not math.isfinite(value))
            or value != int(value)
        ):
            raise ConfigError(f"{given}: expected an integer")
        return int(value)
    if kind == "float":
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)  # YAML reads 1e-4 (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{given}: expected a number")
        return float(value)
    if kind == "str":
        if value is None:
            return ""
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "pretrained":
            return str(value)
        if not isinstance(value, str):
            raise ConfigError(f"{given}: expected a string")
        return value
    if kind == "tuple[int, int]":
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value, value]
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ConfigError(f"{given}: expected [height, width] as two integers")
        return tuple(value)
    if kind == "tuple[str, ...]":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{given}: expected an aspect name, a list of them, or 'all'")
        return tuple(v.strip().lower() for v in value)
    raise AssertionError(f"no coercion for {key}: {kind}")  # pragma: no cover


def _choice(cfg: TrainConfig, key: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if getattr(cfg, key) not in allowed:
        raise ConfigError(
            f"{key}={_show(getattr(cfg, key))} is not allowed; choose one of {list(allowed)}"
        )


def _range(cfg: TrainConfig, key: str, low: float, high: float, *, low_open=False, high_open=False):
    v = getattr(cfg, key)
    ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
    if not ok or (isinstance(v, float) and math.isnan(v)):
        lo = "(" if low_open else "["
        hi = ")" if high_open else "]"
        raise ConfigError(f"{key}={_show(v)} is out of range; allowed {lo}{low}, {high}{hi}")


def template_fields(template: str) -> list[str]:
    """Named fields of a prompt template; ``{}`` is the pseudo-word placeholder."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"prompt_template={template!r}: {exc}") from None
    return [name for _, name, _, _ in parsed if name is not None]


def check_template(template: str) -> list[str]:
    """The template's fields, after checking them: only ``{}`` (once) and ``{aspect}``."""
    names = template_fields(template)
    unknown = [n for n in names if n and n not in TEMPLATE_FIELDS]
    if unknown:
        raise ConfigError(
            f"prompt_template={template!r}: unknown field {{{unknown[0]}}}; "
            "allowed are {} (the pseudo-word) and {aspect}"
        )
    if names.count("") > 1:
        raise ConfigError(f"prompt_template={template!r}: use the {{}} placeholder at most once")
    try:  # conversions and format specs ({aspect!x}, {:{}}) fail only when the prompt is built
        template.format("word", aspect="dorsal right")
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        raise ConfigError(f"prompt_template={template!r}: {exc}") from None
    return names


def config_warnings(cfg: TrainConfig) -> list[str]:
    """Legal settings that probably do not do what was meant, one message each."""
    out = []
    if cfg.warmup_epochs >= cfg.epochs:
        out.append(
            f"warmup_epochs={cfg.warmup_epochs} >= epochs={cfg.epochs}: the whole run is "
            f"warmup, so the {cfg.scheduler} phase of the learning-rate schedule never starts"
        )
    return out


def _validate(cfg: TrainConfig) -> None:
    inf = math.inf
    for key in KEYS:  # catch direct construction with wrong types as well
        object.__setattr__(cfg, key, _coerce(key, getattr(cfg, key)))
    if not cfg.model:
        raise ConfigError(
            "model is empty; use rn50, vitb16, tiny-vit, tiny-rn or an open_clip name"
        )
    h, w = cfg.image_size
    if h < 16 or w < 16 or h > 1024 or w > 1024:
        raise ConfigError(
            f"image_size={_show(list(cfg.image_size))} is out of range; each side in [16, 1024]"
        )
    _range(cfg, "transformer_layers", 1, 12)
    _range(cfg, "dropout", 0.0, 1.0, high_open=True)
    _choice(cfg, "inference_prompt", ("composed", "simplified"))
    _choice(cfg, "classifier", ("linear", "arcface"))
    _range(cfg, "arcface_scale", 0.0, inf, low_open=True, high_open=True)
    _range(cfg, "arcface_margin", 0.0, math.pi / 2, high_open=True)
    if cfg.bnneck_dim <= 0:
        raise ConfigError(
            f"bnneck_dim={cfg.bnneck_dim} is out of range; it must be a positive integer"
        )
    _range(cfg, "num_instances", 2, 256)
    if cfg.batch_size % cfg.num_instances or cfg.batch_size < 2 * cfg.num_instances:
        raise ConfigError(
            f"batch_size={cfg.batch_size} with num_instances={cfg.num_instances}: batch_size must be a "
            "multiple of num_instances holding at least 2 identities (P x K batches)"
        )
    _range(cfg, "epochs", 1, 100_000)
    _range(cfg, "seed", 0, SEED_MAX)
    _range(cfg, "split_seed", 0, SEED_MAX)
    _range(cfg, "early_stop_patience", 0, 100_000)
    _range(cfg, "warmup_epochs", 0, 100_000)
    _choice(cfg, "scheduler", ("cosine", "constant"))
    _range(cfg, "min_lr_ratio", 0.0, 1.0)
    _range(cfg, "lr_clip_visual", 0.0, 1.0)
    _range(cfg, "lr_modules", 0.0, 1.0, low_open=True)
    _range(cfg, "weight_decay", 0.0, 1.0)
    _range(cfg, "max_norm", 0.0, inf, low_open=True)
    for key in ("loss_id_weight", "loss_tri_weight", "supcon_loss_weight", "triplet_margin"):
        _range(cfg, key, 0.0, inf, high_open=True)
    _range(cfg, "label_smoothing", 0.0, 1.0, high_open=True)
    _choice(cfg, "supcon_ramp", ("none", "linear"))
    _range(cfg, "supcon_temperature", 0.0, inf, low_open=True, high_open=True)
    _range(cfg, "flip_prob", 0.0, 1.0)
    _range(cfg, "random_erasing", 0.0, 1.0)
    _range(cfg, "pad", 0, 256)
    _choice(cfg, "dataset", DATASETS)
    if cfg.aspects == ("all",):
        object.__setattr__(cfg, "aspects", ASPECTS)
    if not cfg.aspects:
        raise ConfigError(f"aspects is empty; choose from {list(ASPECTS)} or 'all'")
    for aspect in cfg.aspects:
        if aspect not in ASPECTS:
            raise ConfigError(
                f"aspects: unknown aspect {aspect!r}; choose from {list(ASPECTS)} or 'all'"
            )
    if len(set(cfg.aspects)) != len(cfg.aspects):
        raise ConfigError(f"aspects={list(cfg.aspects)} lists an aspect twice")
    _choice(cfg, "split", ("auto", "published", "random"))
    _range(cfg, "test_fraction", 0.0, 1.0, low_open=True, high_open=True)
    _range(cfg, "val_fraction", 0.0, 1.0, low_open=True, high_open=True)
    _range(cfg, "val_folds", 1, 100)
    _range(cfg, "val_repeats", 1, 100)
    if not 0 <= cfg.val_fold < cfg.val_folds:
        raise ConfigError(
            f"val_fold={cfg.val_fold} is out of range; with val_folds={cfg.val_folds} "
            f"allowed [0, {cfg.val_folds - 1}]"
        )
    _range(cfg, "confirm_fraction", 0.0, 1.0, high_open=True)
    if cfg.confirm_run and cfg.confirm_fraction == 0:
        raise ConfigError("confirm_run needs confirm identities: set confirm_fraction above 0")
    if cfg.confirm_run and cfg.refit:
        raise ConfigError("refit and confirm_run exclude each other: refit has no validation")
    _range(cfg, "num_splits", 1, 1000)
    _choice(cfg, "eval_ap", ("standard", "trapezoid"))
    _range(cfg, "eval_batch_size", 1, 1_000_000)
    _range(cfg, "decode_workers", 0, 1024)
    check_template(cfg.prompt_template)


__all__ = [
    "ASPECTS",
    "KEYS",
    "SEED_MAX",
    "DuplicateKeyError",
    "UniqueKeyLoader",
    "check_template",
    "config_warnings",
    "MODEL_ALIASES",
    "TrainConfig",
    "load_yaml",
    "parse_overrides",
    "parse_yaml",
    "template_fields",
]
