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
