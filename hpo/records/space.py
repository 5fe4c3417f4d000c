"""Search-space YAML -> validated ``SearchSpace`` -> ``trial.suggest_*`` calls.

A space file has three sections::

    base:       fixed trainer keys (any TrainConfig key)
    space:      one entry per tuned key
                  lr_modules: {type: float, low: 1e-5, high: 1e-3, log: true}
                  bnneck_dim: {type: categorical, choices: [256, 512, 1024]}
                  prompt_template: {type: categorical, choices: {photo: "A photo of a {} hand."}}
                  arcface_scale: {type: float, low: 16, high: 64, when: {classifier: arcface}}
    baselines:  configs enqueued first, each a mapping of tuned keys (optional ``name``)

A key whose ``when`` condition does not hold is not suggested and keeps its ``base`` value.
A categorical may give its choices as a mapping of short codes to values: the trial stores
the code (so ``optuna trials`` and the dashboard print ``'prompt_template': 'photo'``, not a
whole sentence) and ``SearchSpace.config`` turns it into the value the trainer gets. A
baseline or a ``when`` may name either; a trial stored with the value itself (a study made
before the codes) is read as it is.
Every problem in a file is collected and reported together, before any study exists.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import optuna

from handreid.config import KEYS, TrainConfig, load_yaml
from handreid.errors import UserError

# shipped inside the package (package data), so an installed wheel finds them too
SPACES_DIR: Traversable = resources.files("hpo") / "search_spaces"
KINDS = ("float", "int", "categorical")
_PARAM_FIELDS = {"type", "low", "high", "log", "step", "choices", "when"}


class SpaceError(UserError):
    """A search space that cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()  # what a trial stores: a mapping's codes, else the values themselves
    when: dict[str, tuple] = field(default_factory=dict)
    values: tuple = ()  # a mapping's values, one per code in ``choices``; empty for a list

    def active(self, values: dict[str, Any]) -> bool:
        return all(values.get(key) in allowed for key, allowed in self.when.items())

    @property
    def coded(self) -> bool:
        """Whether the choices are short codes that stand for the values."""
        return bool(self.values)

    @property
    def full_choices(self) -> tuple:
        """The values the trainer can get: a mapping's values, else the choices."""
        return self.values or self.choices

    def value_of(self, stored: Any) -> Any:
        """The trainer value for what a trial stored: a code's value; anything else as it is
        (a value stored before the choices had codes)."""
        if self.coded and _index(self.choices, stored) is not None:
            return self.values[_index(self.choices, stored)]
        return stored

    def code_of(self, value: Any) -> Any:
        """What a trial stores for ``value``: its code when ``value`` is a mapping's value."""
        if self.coded and _index(self.choices, value) is None:
            i = _index(self.values, value)
            if i is not None:
                return self.choices[i]
        return value

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(
                self.name, self.low, self.high, log=self.log, step=self.step or 1
            )
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value: Any) -> bool:
        if self.kind == "categorical":
            if self.coded:
                return (
                    _index(self.choices, value) is not None
                    or _index(self.values, value) is not None
                )
            return value in self.choices
        return (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and self.low <= value <= self.high
        )


@dataclass(frozen=True)
class SearchSpace:
    base: dict[str, Any]
    params: tuple[Param, ...]
    baselines: tuple[dict[str, Any], ...] = ()
    source: str = "<space>"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggest every active parameter in file order (conditions see earlier values).

        A categorical with codes gives its code, as the trial stores it (``config`` maps it)."""
        values = _as_codes(self.params, self.base)
        params: dict[str, Any] = {}
        for p in self.params:
            if p.active(values):
                params[p.name] = values[p.name] = p.suggest(trial)
        return params

    def config(self, params: dict[str, Any]) -> TrainConfig:
        """Base + params as a validated trainer config (a categorical's code becomes its value)."""
        return TrainConfig.from_dict(
            {**self.base, **self.trainer_values(params)}, source=self.source
        )

    def trainer_values(self, params: dict[str, Any]) -> dict[str, Any]:
        """``params`` as the trainer takes them: each categorical's code replaced by its value."""
        by_name = {p.name: p for p in self.params}
        return {k: by_name[k].value_of(v) if k in by_name else v for k, v in params.items()}

    def with_base(self, **changes: Any) -> SearchSpace:
        """The same space with fixed keys changed (``--epochs``, ``--set``, data options)."""
        clash = sorted(set(changes) & set(self.names))
        if clash:
            raise SpaceError(
                f"{self.source}: {clash[0]!r} is searched in this space; it cannot also be fixed"
            )
        base = {**self.base, **changes}
        TrainConfig.from_dict(base, source=self.source)  # raises ConfigError on a bad value
        return SearchSpace(base, self.params, self.baselines, self.source)

    def to_dict(self) -> dict[str, Any]:
        space = {}
        for p in self.params:
            entry: dict[str, Any] = {"type": p.kind}
            if p.kind == "categorical":
                entry["choices"] = (
                    dict(zip(p.choices, p.values, strict=True)) if p.coded else list(p.choices)
                )
            else:
                entry.update(low=p.low, high=p.high)
                if p.log:
                    entry["log"] = True
                if p.step is not None:
                    entry["step"] = p.step
            if p.when:
                entry["when"] = {k: list(v) for k, v in p.when.items()}
            space[p.name] = entry
        return {
            "base": dict(self.base),
            "space": space,
            "baselines": [dict(b) for b in self.baselines],
        }


def space_digest(space: SearchSpace) -> str:
    """The space's short SHA-256 (its base, params and baselines), kept by the study so a
    later run or a stored ``space.yaml`` can be checked against it. A mapping of codes counts
    as its ``[code, value]`` pairs in order (Optuna numbers choices by their place)."""
    data = space.to_dict()
    for entry in data["space"].values():
        if isinstance(entry.get("choices"), dict):
            entry["choices"] = [[code, value] for code, value in entry["choices"].items()]
    text = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def builtin_spaces() -> list[str]:
    """Names of the search spaces shipped with hpo (``rn50``, ``tiny-vit``, ...)."""
    return sorted(
        f.name.removesuffix(".yaml") for f in SPACES_DIR.iterdir() if f.name.endswith(".yaml")
    )


def space_path(backbone_or_path: str | Path) -> Path | Traversable:
    """A file path, or the name of a space shipped in ``hpo/search_spaces/`` (``rn50``)."""
    path = Path(backbone_or_path)
    if isinstance(backbone_or_path, Path) or path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SpaceError(f"search space file not found: {path}")
        return path
    candidate = SPACES_DIR / f"{backbone_or_path}.yaml"
    if not candidate.is_file():
        raise SpaceError(
            f"unknown backbone {str(backbone_or_path)!r}; choose one of {builtin_spaces()} "
            "or pass --space FILE"
        )
    return candidate


def space_file(text: str) -> Path:
    """The file a ``--space`` argument names, whatever its suffix; a one-line SpaceError when
    it is missing or not a regular file (a folder, ``/dev/null``)."""
    path = Path(text)
    if not path.exists():
        raise SpaceError(f"search space file not found: {path}")
    if not path.is_file():
        kind = "a directory" if path.is_dir() else "a device or a pipe"
        raise SpaceError(f"--space {path} is {kind}, not a file; give a search-space YAML file")
    return path


def load_space(backbone_or_path: str | Path) -> SearchSpace:
    """A search space by backbone name (``rn50``) or from a file (a Path, or a ``.yaml`` name)."""
    path = space_path(backbone_or_path)
    data = load_yaml(path, error=SpaceError)  # duplicate keys are an error, not the last one wins
    return parse_space(data, source=str(path))


def _beyond_float(data: Any, where: str = "") -> str | None:
    """Where an integer too large for a float sits in ``data`` (math and repr fail on them)."""
    if isinstance(data, int) and not isinstance(data, bool):
        return where or "a value" if abs(data) > sys.float_info.max else None
    items = (
        data.items()
        if isinstance(data, dict)
        else enumerate(data)
        if isinstance(data, list)
        else ()
    )
    for key, value in items:
        if isinstance(key, int) and _beyond_float(key):
            return where or "a key"
        found = _beyond_float(value, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def parse_space(data: Any, source: str = "<space>") -> SearchSpace:
    errors: list[str] = []
    if not isinstance(data, dict):
        raise SpaceError(f"{source}: expected a mapping with base, space and baselines")
    huge = _beyond_float(data)
    if huge:
        raise SpaceError(f"{source}: {huge}: a number beyond the range of a float")
    extra = sorted(set(data) - {"base", "space", "baselines", "description"})
    if extra:
        errors.append(
            f"unknown section {extra[0]!r} (allowed: base, space, baselines, description)"
        )
    base = data.get("base") or {}
    raw_space = data.get("space") or {}
    if not isinstance(base, dict):
        errors.append("base must be a mapping of trainer keys")
        base = {}
    if not isinstance(raw_space, dict) or not raw_space:
        errors.append("space must be a non-empty mapping of trainer keys to distributions")
        raw_space = {}
    base_cfg = _check_base(base, errors)
    params: list[Param] = []
    for name, spec in raw_space.items():
        param = _parse_param(name, spec, base_cfg, params, errors)
        if param is not None:
            params.append(param)
    baselines = _parse_baselines(data.get("baselines") or [], params, base, errors)
    if errors:
        raise SpaceError(f"{source}: " + "; ".join(errors))
    return SearchSpace(dict(base), tuple(params), tuple(baselines), source)


def _check_base(base: dict, errors: list[str]) -> TrainConfig | None:
    try:
        return TrainConfig.from_dict(base, source="base")
    except UserError as exc:
        errors.append(str(exc))
        return None


def _check_value(name: str, value: Any, base_cfg: TrainConfig | None) -> str | None:
    """The trainer's own validation of one value, or None when it is fine."""
    if base_cfg is None or name not in KEYS:
        return None
    try:
        base_cfg.replace(**{name: value})
    except UserError as exc:
        return str(exc)
    return None


def _parse_param(
    name: str, spec: Any, base_cfg, earlier: list[Param], errors: list[str]
) -> Param | None:
    where = f"space.{name}"
    if name not in KEYS:
        import difflib

        close = difflib.get_close_matches(str(name), KEYS, n=1, cutoff=0.5)
        errors.append(
            f"{where}: not a trainer key" + (f"; did you mean {close[0]!r}?" if close else "")
        )
        return None
    if not isinstance(spec, dict):
        errors.append(f"{where}: expected a mapping with type and its range or choices")
        return None
    unknown = sorted(set(spec) - _PARAM_FIELDS)
    if unknown:
        errors.append(f"{where}: unknown field {unknown[0]!r} (allowed: {sorted(_PARAM_FIELDS)})")
    kind = spec.get("type")
    if kind not in KINDS:
        errors.append(f"{where}: type {kind!r} is not one of {list(KINDS)}")
        return None
    when = _parse_when(where, spec.get("when"), base_cfg, earlier, errors)
    if kind == "categorical":
        choices = spec.get("choices")
        if isinstance(choices, dict):
            return _parse_codes(name, choices, where, base_cfg, when, errors)
        if not isinstance(choices, list) or not choices:
            errors.append(f"{where}: categorical needs a non-empty list of choices")
            return None
        if len({repr(c) for c in choices}) != len(choices):
            errors.append(f"{where}: choices repeat a value")
        for choice in choices:
            problem = _check_value(name, choice, base_cfg)
            if problem:
                errors.append(f"{where}: choice {choice!r} is invalid ({problem})")
        return Param(name, kind, choices=tuple(choices), when=when)
    return _parse_range(name, kind, spec, where, base_cfg, when, errors)


def _parse_codes(name, choices: dict, where, base_cfg, when, errors) -> Param | None:
    """Choices given as ``{code: value}``: the trial stores the code, the trainer gets the
    value. One error line per problem."""
    if not choices:
        errors.append(
            f"{where}: choices is an empty mapping; give at least one {{code: value}}, "
            "such as {photo: 'A photo of a {} hand.'}"
        )
        return None
    ok = True
    for code in choices:
        if not isinstance(code, str) or not code.strip():
            errors.append(
                f"{where}: choice code {code!r} is not a name; codes are short strings "
                "such as photo"
            )
            ok = False
    first: dict[str, Any] = {}  # repr(value) -> its first code
    for code, value in choices.items():
        if repr(value) in first:
            errors.append(
                f"{where}: codes {first[repr(value)]!r} and {code!r} have the same value "
                f"{value!r}; give each value one code"
            )
            ok = False
        first.setdefault(repr(value), code)
    for code in choices:
        owner = first.get(repr(code))  # a code that is another code's value
        if isinstance(code, str) and owner is not None and owner != code:
            errors.append(
                f"{where}: code {code!r} is also the value of code {owner!r}; a stored "
                f"{code!r} would be ambiguous, so choose another code"
            )
            ok = False
    for code, value in choices.items():
        problem = _check_value(name, value, base_cfg)
        if problem:
            errors.append(f"{where}: choice {code}={value!r} is invalid ({problem})")
    if not ok:
        return None
    return Param(
        name, "categorical", choices=tuple(choices), when=when, values=tuple(choices.values())
    )


def _parse_range(name, kind, spec, where, base_cfg, when, errors) -> Param | None:
    low, high, log, step = (
        spec.get("low"),
        spec.get("high"),
        spec.get("log", False),
        spec.get("step"),
    )
    numbers = (int,) if kind == "int" else (int, float)
    low, high, step = (_number(v) for v in (low, high, step))
    if not all(isinstance(v, numbers) and not isinstance(v, bool) for v in (low, high)):
        errors.append(
            f"{where}: {kind} needs numeric low and high" + (" (integers)" if kind == "int" else "")
        )
        return None
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        errors.append(f"{where}: low={low} must be below high={high}")
        return None
    if not isinstance(log, bool):
        errors.append(f"{where}: log must be true or false")
    if log and low <= 0:
        errors.append(f"{where}: a log scale needs low > 0, got low={low}")
    if step is not None:
        if not isinstance(step, numbers) or isinstance(step, bool) or step <= 0:
            errors.append(f"{where}: step must be a positive {kind}, got {step!r}")
        elif log:
            errors.append(f"{where}: step and log cannot be combined")
        elif step > high - low:
            errors.append(f"{where}: step={step} is larger than the range {low}..{high}")
    for bound in (low, high):
        problem = _check_value(name, bound, base_cfg)
        if problem:
            errors.append(f"{where}: bound {bound} is invalid ({problem})")
    return Param(name, kind, low, high, bool(log), step, when=when)


def _number(value: Any) -> Any:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _parse_when(where, when, base_cfg, earlier: list[Param], errors) -> dict[str, tuple]:
    if when is None:
        return {}
    if not isinstance(when, dict) or not when:
        errors.append(f"{where}: when must be a mapping like {{classifier: arcface}}")
        return {}
    out = {}
    by_name = {p.name: p for p in earlier}
    for key, value in when.items():
        allowed = tuple(value) if isinstance(value, list) else (value,)
        if key in by_name:
            cond = by_name[key]
            if cond.kind != "categorical":
                errors.append(f"{where}: when refers to {key!r}, which is not categorical")
            allowed = tuple(cond.code_of(v) for v in allowed)  # a value -> its code
            for v in allowed:
                if cond.kind == "categorical" and v not in cond.choices:
                    errors.append(
                        f"{where}: when {key}={v!r} can never hold; {key} takes {list(cond.choices)}"
                    )
        elif key in KEYS:
            errors.append(
                f"{where}: when refers to {key!r}, which must be a categorical defined earlier in space"
            )
        else:
            errors.append(f"{where}: when refers to unknown key {key!r}")
        out[key] = allowed
    return out


def _parse_baselines(
    raw, params: list[Param], base: dict, errors: list[str]
) -> list[dict[str, Any]]:
    if not isinstance(raw, list):
        errors.append("baselines must be a list of mappings")
        return []
    by_name = {p.name: p for p in params}
    out = []
    for i, entry in enumerate(raw):
        where = f"baselines[{i}]"
        if not isinstance(entry, dict):
            errors.append(f"{where}: expected a mapping of tuned keys")
            continue
        # a number written as text becomes a number; a categorical's value becomes its code
        entry = {
            k: (_number(v) if by_name[k].kind != "categorical" else by_name[k].code_of(v))
            if k in by_name
            else v
            for k, v in entry.items()
        }
        values = _as_codes(params, {**base, **{k: v for k, v in entry.items() if k != "name"}})
        for key, value in entry.items():
            if key == "name":
                continue
            p = by_name.get(key)
            if p is None:
                errors.append(f"{where}: {key!r} is not a searched key (fixed keys belong in base)")
            elif not p.active(values):
                errors.append(f"{where}: {key!r} is set but its condition {p.when} does not hold")
            elif not p.contains(value):
                errors.append(f"{where}: {key}={value!r} lies outside the space")
        # Optuna would draw a missing one at random: the baseline would not be the one named
        missing = [p.name for p in params if p.name not in entry and p.active(values)]
        if missing:
            errors.append(
                f"{where}: sets no value for the searched key(s) {', '.join(missing)}; a "
                "baseline fixes every searched key that applies to it (else it is drawn at "
                "random), so add them"
            )
        same = next((j for j, b in enumerate(out) if _settings(b) == _settings(entry)), None)
        if same is not None:
            errors.append(
                f"{where}: the same settings as baselines[{same}]; a study runs each "
                "configuration once, so give each baseline different values"
            )
        out.append(entry)
    return out


def _settings(baseline: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in baseline.items() if k != "name"}


def _index(items: tuple, value: Any) -> int | None:
    """Where ``value`` is in ``items`` (True is not 1 here, unlike ``in``)."""
    for i, item in enumerate(items):
        if isinstance(item, bool) == isinstance(value, bool) and item == value:
            return i
    return None


def _as_codes(params, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each coded categorical's value replaced by its code (``when`` names
    codes, and a fixed key keeps its base value)."""
    by_name = {p.name: p for p in params}
    return {k: by_name[k].code_of(v) if k in by_name else v for k, v in values.items()}
