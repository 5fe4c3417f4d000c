"""Every option of `hpo` and `handreid` explains itself: help text, its choices, its default."""

from __future__ import annotations

import argparse

import pytest

from handreid.cli import build_parser as handreid_parser
from handreid.clihelp import HelpFormatter, shown_default
from hpo.cli import build_parser as hpo_parser


def commands(parser: argparse.ArgumentParser):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sorted(sub.choices.items())


def options(parser: argparse.ArgumentParser):
    return [
        a
        for a in parser._actions
        if a.option_strings and a.help is not argparse.SUPPRESS and "-h" not in a.option_strings
    ]


ALL = [
    (f"{prog} {name}", sub)
    for prog, build in (("hpo", hpo_parser), ("handreid", handreid_parser))
    for name, sub in commands(build())
]


@pytest.mark.parametrize("name,parser", ALL, ids=[n for n, _ in ALL])
def test_every_option_has_help_that_shows_its_default(name, parser):
    text = parser.format_help()  # every help string formats (no stray %)
    assert parser.description, name
    for action in options(parser):
        flag = action.option_strings[-1]
        assert action.help and action.help.strip(), f"{name} {flag} has no help"
        shown = HelpFormatter(name)._get_help_string(action) % {
            **vars(action),
            "default": action.default,
            "prog": name,
        }
        if shown_default(action):
            assert "default" in shown, f"{name} {flag} hides its default {action.default!r}"
        if action.choices:
            assert "{" + ",".join(map(str, action.choices)) + "}" in text or action.metavar
    assert "--help" in text


def test_fixed_sets_are_choices_and_free_paths_are_not():
    from hpo.records.space import builtin_spaces

    run = dict(commands(hpo_parser()))["run"]
    by_flag = {a.option_strings[-1]: a for a in run._actions if a.option_strings}
    assert list(by_flag["--backbone"].choices) == builtin_spaces()
    assert list(by_flag["--sampler"].choices) == ["tpe", "random", "gp"]
    assert list(by_flag["--pruner"].choices) == ["median", "hyperband", "runs", "none"]
    assert list(by_flag["--dataset"].choices) == ["11k", "hd", "folder"]
    assert by_flag["--space"].choices is None and by_flag["--data"].choices is None
    trials = dict(commands(hpo_parser()))["trials"]
    state = next(a for a in trials._actions if "--state" in a.option_strings)
    assert list(state.choices) == ["complete", "pruned", "fail", "running", "waiting"]


def test_help_names_defaults_once(capsys):
    run = dict(commands(hpo_parser()))["run"]
    text = " ".join(run.format_help().split())
    assert "Optuna sampler (default: tpe)" in text
    assert "(default 1; with more, the default storage" in text  # written out, not repeated
    assert "(default: 1)" not in text
    assert "--quiet one line per finished trial only" in text and "(default: False)" not in text


def test_hpo_alone_lists_the_verbs_and_exits_2(capsys, monkeypatch):
    from hpo.cli import COMMANDS, main

    monkeypatch.setenv("COLUMNS", "60")
    with pytest.raises(SystemExit) as exc:
        main([])
    out, err = capsys.readouterr()
    # a usage error, as any refusal is: one error line, and the verbs to choose from
    assert exc.value.code == 2
    assert err == "error: no command given: name one of the commands above\n"
    err = out
    lines = err.splitlines()
    assert all(len(line) <= 60 for line in lines), err
    assert lines[0].startswith("usage: hpo COMMAND") and "commands:" in lines
    verbs = lines[lines.index("commands:") + 1 :]
    listed = [line.split()[0] for line in verbs if line[2] != " "]  # not a wrapped help line
    assert listed == [
        "run", "confirm", "final", "export", "show", "trials", "ls", "report", "dashboard"
    ]  # fmt: skip
    assert len(listed) == len(COMMANDS)
    words = " ".join(err.split())  # a help line wrapped at spaces reads whole
    assert "confirm re-train the top trials and the baselines on fresh seeds; compare them" in words


def test_every_verb_has_a_help_line_from_its_module():
    from hpo.cli import COMMANDS, verb

    full = {name: sub.description for name, sub in commands(hpo_parser())}
    for command in COMMANDS:
        name, text = verb(command)
        assert name in full and text and not text.endswith(".")


IMPORTS = """
import sys
from hpo.cli import main
try:
    main({argv!r})
except SystemExit as exc:
    code = exc.code
print("RESULT", code, "optuna" in sys.modules, "torch" in sys.modules)
"""


@pytest.mark.parametrize(
    "argv, code",
    [
        (["--help"], 0),
        ([], 2),
        (["nope"], 2),
        (["show", "--top", "0"], 2),
        (["confirm", "--top", "0"], 2),
        (["confirm", "--seeds", "1"], 2),
        (["trials", "--state", "done"], 2),
        (["export", "--help"], 0),
    ],
)
def test_help_and_refusals_that_need_no_study_load_no_optuna(tmp_path, argv, code):
    """Optuna takes a third of a second or more to import: `hpo --help` and a refusal of a
    bad argument do not wait for it (benchmarks/bench_refusals.py times them)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", IMPORTS.format(argv=argv)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    result = proc.stdout.splitlines()[-1].split()
    assert result == ["RESULT", str(code), "False", "False"], proc.stderr


WARNINGS = """
import sys, warnings
import hpo
assert "optuna" not in sys.modules
import optuna
with warnings.catch_warnings(record=True) as caught:
    optuna.samplers.TPESampler(constant_liar=True)  # "Argument ``constant_liar`` is ..."
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)  # "... is experimental ("
with warnings.catch_warnings(record=True) as others:
    warnings.warn("an ordinary warning", UserWarning)
print("RESULT", len(caught), len(others))
"""


def test_optunas_experimental_warnings_stay_silent_with_no_optuna_import_at_start(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-W", "default", "-c", WARNINGS],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.stdout.split() == ["RESULT", "0", "1"], proc.stderr


def test_the_parsers_storage_default_is_the_storage_modules():
    """Written out in hpo.commands._common so that building a parser imports no Optuna."""
    from hpo.commands._common import DEFAULT_STORAGE
    from hpo.records import storage

    assert DEFAULT_STORAGE == storage.DEFAULT_STORAGE
