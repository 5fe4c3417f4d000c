"""Property-based fuzzing of the parsers users feed by hand.

Whatever the input, the result is a valid object or one of our ``UserError`` subclasses
(``ConfigError``, ``DataError``, ``SpaceError``) with a one-line message; any other exception
would reach the user as a traceback. Each test stays well under 20 s (``max_examples``).
"""

from __future__ import annotations

import csv
import io
import math
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from handreid.config import ASPECTS, KEYS, TrainConfig, parse_overrides, parse_yaml
from handreid.data.hands11k import COLUMNS, CSV_NAME, IMAGE_DIR, load_catalog, read_rows
from handreid.errors import ConfigError, DataError, UserError
from hpo.records.space import SearchSpace, SpaceError, parse_space

pytestmark = pytest.mark.integration  # fuzzing: hundreds of examples per parser

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_FILES = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---- values a user might type -----------------------------------------------------------------
WORDS = [
    "all",
    *ASPECTS,
    "dorsal",
    "cosine",
    "constant",
    "linear",
    "arcface",
    "none",
    "composed",
    "simplified",
    "random",
    "published",
    "11k",
    "hd",
    "folder",
    "tiny-vit",
    "openai",
    "A photo of a {} {aspect} hand.",
    "{}",
    "{aspect}",
    "{:{}}",
    "{aspect!x}",
    "{0}",
    "{",
    "}",
    "1e-4",
    "on",
    "",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(WORDS),
    st.text(max_size=20),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
CONFIG_KEYS = st.one_of(st.sampled_from(KEYS), st.text(max_size=16), st.integers(), st.none())
MAPPINGS = st.dictionaries(CONFIG_KEYS, VALUES, max_size=8)


def one_line(exc: BaseException) -> None:
    assert "\n" not in str(exc), str(exc)


# ---- TrainConfig.from_dict / from_yaml / parse_overrides ---------------------------------------
@FUZZ
@given(MAPPINGS)
@example({"seed": 10**5000})
@example({"epochs": math.inf, "image_size": [10**400, 3]})
@example({"prompt_template": "{:{}}"})
def test_from_dict_gives_a_config_or_a_config_error(data):
    try:
        cfg = TrainConfig.from_dict(data)
    except ConfigError as exc:
        one_line(exc)
        return
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg  # what it accepts, it writes back


def yaml_line(key: str, value: str, indent: int) -> str:
    return " " * indent + f"{key}: {value}"


YAML_TOKENS = st.sampled_from(
    [
        "[",
        "]",
        "{",
        "}",
        ",",
        ": ",
        "- ",
        "&a ",
        "*a",
        "<<: *a",
        "!!python/object:os.system ",
        "!!binary ",
        "!!timestamp ",
        "!!set ",
        "!!float ",
        "!!int ",
        "? ",
        "'",
        '"',
        "#",
        "\n",
        "  ",
        "\t",
        "2001-13-01",
        "2001-02-29",
        "1e-4",
        ".inf",
        ".nan",
        "~",
        "9" * 4400,
        "%YAML 1.1\n---\n",
        "...\n",
        "\x00",
        "\ufeff",
    ]
)
YAML_LINES = st.builds(
    yaml_line,
    st.one_of(st.sampled_from(KEYS), st.text(min_size=1, max_size=8)),
    st.one_of(
        st.sampled_from(WORDS).map(repr),
        st.text(max_size=12),
        st.lists(YAML_TOKENS, max_size=5).map("".join),
        VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
    ),
    st.sampled_from([0, 0, 0, 2, 4]),
)
YAML_TEXTS = st.one_of(
    st.lists(YAML_LINES, max_size=8).map("\n".join),
    st.lists(st.one_of(YAML_TOKENS, st.text(max_size=6)), max_size=20).map("".join),
    MAPPINGS.map(lambda m: yaml.safe_dump(m, allow_unicode=True)),
    st.text(max_size=80),
)


@FUZZ_FILES
@given(
    st.one_of(YAML_TEXTS.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=120))
)
@example(b"epochs: 3\nepochs: 4\n")
@example(b"a: &a [*a]\n")
@example(b"epochs: " + b"[" * 3000 + b"]" * 3000)
def test_from_yaml_gives_a_config_or_a_config_error(raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_bytes(raw)
        try:
            cfg = TrainConfig.from_yaml(path)
        except ConfigError as exc:
            one_line(exc)
            return
    assert isinstance(cfg, TrainConfig)


OVERRIDES = st.one_of(
    st.text(max_size=40),
    st.builds(
        lambda k, v: f"{k}={v}",
        st.one_of(st.sampled_from(KEYS), st.text(max_size=8)),
        st.one_of(st.text(max_size=30), st.lists(YAML_TOKENS, max_size=6).map("".join)),
    ),
)


@FUZZ
@given(st.lists(OVERRIDES, max_size=4))
@example(["epochs=2001-13-01", "seed=" + "9" * 5000])
def test_parse_overrides_gives_typed_values_or_a_config_error(items):
    try:
        values = parse_overrides(items)
    except ConfigError as exc:
        one_line(exc)
        return
    assert set(values) <= set(KEYS)
    try:
        TrainConfig().replace(**values)
    except ConfigError as exc:
        one_line(exc)


@FUZZ
@given(YAML_TEXTS)
def test_parse_yaml_gives_data_or_a_config_error(text):
    try:
        parse_yaml(text, "fuzz")
    except ConfigError as exc:
        one_line(exc)


# ---- hpo.records.space.parse_space ---------------------------------------------------------------------
# Integers beyond float range (where math.isfinite and repr fail) must give a SpaceError too.
HUGE = st.integers(min_value=2**1024, max_value=2**1100)  # (a 4,300-digit one: see the xfail)


BOUNDS = st.one_of(
    st.integers(min_value=-(2**53), max_value=2**53),
    HUGE,
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["1e-4", "x", None, True]),
)
PARAMS = st.fixed_dictionaries(
    {"type": st.sampled_from(["float", "int", "categorical", "uniform", None])},
    optional={
        "low": BOUNDS,
        "high": BOUNDS,
        "log": st.one_of(st.booleans(), st.sampled_from(["yes", 1])),
        "step": BOUNDS,
        "choices": st.one_of(st.lists(SCALARS, max_size=4), SCALARS),
        "when": st.one_of(
            st.dictionaries(
                st.sampled_from(["classifier", "scheduler", "nope"]), VALUES, max_size=2
            ),
            SCALARS,
        ),
        "extra": SCALARS,
    },
)
SPACE_VALUES = st.recursive(
    st.one_of(
        st.none(),
        HUGE,
        st.booleans(),
        st.integers(min_value=-(2**53), max_value=2**53),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(WORDS),
        st.text(max_size=12),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
SPACES = st.fixed_dictionaries(
    {},
    optional={
        "base": st.one_of(
            st.dictionaries(st.sampled_from(KEYS), SPACE_VALUES, max_size=4), SPACE_VALUES
        ),
        "space": st.one_of(
            st.dictionaries(
                st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), PARAMS, max_size=4
            ),
            SPACE_VALUES,
        ),
        "baselines": st.one_of(
            st.lists(
                st.dictionaries(st.sampled_from([*KEYS[:12], "name"]), SPACE_VALUES, max_size=3),
                max_size=3,
            ),
            SPACE_VALUES,
        ),
        "description": SPACE_VALUES,
        "extra": SPACE_VALUES,
    },
)


@FUZZ
@given(st.one_of(SPACES, SPACE_VALUES))
@example({"space": {"lr_modules": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}}})
@example({"space": {"classifier": {"type": "categorical", "choices": ["linear", "arcface"]}}})
def test_parse_space_gives_a_space_or_a_space_error(data):
    try:
        space = parse_space(data, "fuzz.yaml")
    except UserError as exc:
        assert isinstance(exc, SpaceError), type(exc)
        return
    assert isinstance(space, SearchSpace)


def test_parse_space_numbers_beyond_float_range_are_one_error():
    with pytest.raises(SpaceError, match="space.epochs.high: a number beyond the range"):
        parse_space({"space": {"epochs": {"type": "int", "low": 1, "high": 10**400}}})
    with pytest.raises(SpaceError, match="beyond the range of a float"):
        parse_space({"space": {"bnneck_dim": {"type": "categorical", "choices": [10**5000]}}})


# ---- the 11k CSV reader ------------------------------------------------------------------------
CELLS = st.one_of(
    st.sampled_from(["", " ", "0", "1", "2", "1200000 ", "0000001", *ASPECTS, "Dorsal Right", "x"]),
    st.sampled_from([f"Hand_{n:07d}.jpg" for n in range(4)]),
    st.text(max_size=10),
)
HEADERS = st.one_of(
    st.just(list(COLUMNS)),
    st.permutations(list(COLUMNS)),
    st.lists(st.sampled_from([*COLUMNS, "extra", ""]), max_size=11),
)


def csv_bytes(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8", "surrogatepass")


CSV_FILES = st.one_of(
    st.builds(csv_bytes, HEADERS, st.lists(st.lists(CELLS, max_size=11), max_size=12)),
    st.binary(max_size=300),
    st.builds(
        lambda a, b: a + b, st.just(",".join(COLUMNS).encode() + b"\n"), st.binary(max_size=200)
    ),
)


def load(raw: bytes, images: int, aspects: tuple[str, ...], exclude: bool):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / CSV_NAME).write_bytes(raw)
        (root / IMAGE_DIR).mkdir()
        for n in range(images):
            (root / IMAGE_DIR / f"Hand_{n:07d}.jpg").write_bytes(b"")
        cfg = TrainConfig(aspects=aspects, exclude_accessories=exclude)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return read_rows(root), load_catalog(root, cfg)


@FUZZ_FILES
@given(
    CSV_FILES,
    st.integers(0, 4),
    st.sampled_from([("dorsal right",), ASPECTS, ("palmar left", "dorsal left")]),
    st.booleans(),
)
@example(b"id,aspectOfHand,imageName,accessories\n1,dorsal right\n", 1, ("dorsal right",), True)
@example(b"\xff\xfe" + "id".encode("utf-16-le"), 1, ("dorsal right",), True)
def test_11k_csv_gives_records_or_a_data_error(raw, images, aspects, exclude):
    try:
        rows, catalog = load(raw, images, aspects, exclude)
    except DataError as exc:
        one_line(exc)
        return
    assert all(r.identity and r.subject and r.aspect in aspects for r in catalog.records)
    assert all(r["id"] for r in rows if r["imageName"] in {p.name for p in catalog.found})


@pytest.mark.parametrize("aspects", [("dorsal right",), ASPECTS])
def test_fuzz_helper_reads_a_valid_csv(aspects):
    """The harness itself works: a well-formed file gives records."""
    rows = [
        ["0000001", "30", "male", "fair", "0", "0", a, f"Hand_{n:07d}.jpg", "0"]
        for n, a in enumerate(ASPECTS)
    ]
    _, catalog = load(csv_bytes(list(COLUMNS), rows), 4, aspects, True)
    assert len(catalog.records) == len(aspects)


# ---- journal files: damage anywhere is found before a write -----------------------------------
def _journal_bytes() -> bytes:
    """A journal file with one study of three trials (params, values, attributes)."""
    import optuna

    from hpo.records.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j.log"
        study = optuna.create_study(study_name="s", storage=open_storage(str(path)))
        study.set_user_attr("space_digest", "abc")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
        return path.read_bytes()


JOURNAL = _journal_bytes()


@st.composite
def damaged_journals(draw) -> bytes:
    kind = draw(st.sampled_from(["append", "insert", "truncate"]))
    if kind == "append":
        return JOURNAL + draw(st.binary(min_size=1, max_size=64))
    if kind == "insert":
        at = draw(st.integers(0, len(JOURNAL)))
        return JOURNAL[:at] + draw(st.binary(min_size=1, max_size=16)) + JOURNAL[at:]
    return JOURNAL[: draw(st.integers(0, len(JOURNAL) - 1))]


@FUZZ_FILES
@given(damaged_journals())
@example(JOURNAL + b"garbage line\n")
@example(JOURNAL + b'{"op_code": 4, "worker_id": "w"}\n')  # a record without its study
@example(JOURNAL.replace(b"\n", b"\nx\n", 1))
def test_a_damaged_journal_is_refused_untouched_or_opens_and_stays_readable(raw):
    """Whatever bytes were appended, inserted or cut: either a one-line StorageError and the
    file as it was (no byte, no lock file written), or the journal opens, takes a write, and
    opens again afterwards. Never a traceback."""
    import optuna

    from hpo.records.storage import StorageError, check_journal, open_storage

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "j.log"
        path.write_bytes(raw)
        try:
            check_journal(path, settle=0.001)  # (a torn tail is waited for; not here)
            storage = open_storage(str(path))
        except StorageError as exc:
            one_line(exc)
            assert path.read_bytes() == raw, "a damaged journal was written to"
            assert sorted(p.name for p in Path(tmp).iterdir()) == ["j.log"]
            return
        study = optuna.create_study(study_name="fuzz-write", storage=storage, load_if_exists=True)
        study.set_user_attr("written", True)
        again = optuna.get_all_study_summaries(open_storage(str(path)), include_best_trial=False)
        assert "fuzz-write" in {s.study_name for s in again}


@given(
    st.one_of(
        st.text(max_size=60),
        st.lists(st.sampled_from([*ASPECTS, "each", "study", "dorsal", " ", ""]), max_size=5).map(
            ",".join
        ),
    ),
    st.sampled_from(["11k", "hd", "folder"]),
)
@settings(max_examples=300, deadline=None)
def test_final_aspects_parse_to_known_aspects_or_one_user_error(text, layout):
    """``hpo final --aspects``: any text gives sections of known aspects, or one UserError."""
    from handreid.config import TrainConfig
    from handreid.errors import UserError
    from hpo.decide.final import parse_aspects
    from tests.conftest import TINY

    try:
        sections = parse_aspects(text, TrainConfig(**TINY), layout)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert sections and len({s.name for s in sections}) == len(sections)
    for s in sections:
        assert s.aspects is None or (len(s.aspects) == 1 and s.aspects[0] in ASPECTS)
