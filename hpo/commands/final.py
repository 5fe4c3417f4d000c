"""``hpo final``: train the confirmed winner and its baseline on all training identities and
report them once on the test identities, per aspect: the paper's table."""

from __future__ import annotations

import argparse
import sys

from handreid.errors import UserError
from hpo.commands._common import (
    add_command,
    storage_arg,
    study_arg,
)
from hpo.commands._fleet import add_fleet_options, check_fleet_args, open_fleet, run_fleet
from hpo.fleet import slurm


def add_parser(sub) -> None:
    p = add_command(
        sub,
        "final",
        "train the confirmed winner and its baseline on all training identities and report "
        "them once on the test identities, per aspect: the paper's table",
    )
    study_arg(p)
    storage_arg(p)
    p.add_argument(
        "--seeds", type=int, default=3, help="fresh training seeds per config and aspect (2-100)"
    )
    p.add_argument(
        "--config",
        action="append",
        default=[],
        metavar="FILE",
        help="an extra row: a trainer YAML of the study's backbone, trained the same way "
        "(may be given several times)",
    )
    p.add_argument(
        "--aspects",
        default="study",
        help="study (the aspects the study tuned on, one section), each (every 11k aspect, "
        "or the HD set, one section each), or aspects separated by commas, e.g. "
        "'dorsal right,palmar left'",
    )
    add_fleet_options(p, "final workers")
    p.set_defaults(func=run)


def _child(args: argparse.Namespace, study_name: str, lines: str) -> list[str]:
    return [
        "final",
        "--worker",
        "--study",
        study_name,
        "--storage",
        args.storage,
        "--device",
        args.device,
        "--heartbeat",
        str(args.heartbeat),
        "--lines",
        lines,
    ]


def run_label(trial) -> str:
    from hpo.common.attrs import attrs_of

    a = attrs_of(trial)
    return f"final {a.get('final_label', '?')}, {a.get('final_aspect', '?')}, seed {a.get('final_seed', '?')}"


def run_line(trial, columns=None) -> str:
    from hpo.common.lines import fit

    head = f"{run_label(trial)} {trial.state.name}"
    if trial.state.name == "COMPLETE":
        head += f" test mAP {100 * trial.value:.2f} %"
    elif (error := trial.user_attrs.get("error")) is not None:
        head += f" · {error}"
    return fit(head, columns)


def _train():
    from handreid.engine import fit

    return fit


def _rerun(args: argparse.Namespace, study_name: str) -> str:
    """This ``hpo final`` without Slurm's options: it builds the table of finished runs."""
    import shlex

    from hpo.records.storage import shown

    argv = ["hpo", "final", "--study", study_name, "--storage", shown(args.storage)]
    argv += ["--seeds", str(args.seeds), "--aspects", args.aspects]
    for path in args.config:
        argv += ["--config", path]
    return shlex.join(argv)


def _shown(folder) -> str:
    """The folder relative to the working folder when it is below it."""
    from pathlib import Path

    try:
        return str(folder.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(folder)


def run(args: argparse.Namespace) -> int:
    if not 2 <= args.seeds <= 100:
        raise UserError(f"--seeds={args.seeds}: must be 2 to 100 (an interval needs 2 seeds)")
    check_fleet_args(args)

    from optuna.trial import TrialState

    from hpo.common.lines import fit
    from hpo.decide import confirm as cf
    from hpo.decide import final as fr
    from hpo.search.objective import DataPool
    from hpo.views.final_table import text, write_all

    storage, study, gpus, device = open_fleet(args)
    pool = DataPool()
    if args.worker:  # a worker takes queued runs; the parent planned and will build the table
        companion = fr.open_runs(study, storage)
        return run_fleet(
            args,
            companion,
            job=None,
            done=0,
            todo=0,
            gpus=gpus,
            label=run_label,
            line=run_line,
            what="final runs",
            child=None,
            recover=None,
            objective=lambda progress: fr.FinalRun(
                study.study_name, device, pool, fit_fn=progress.batches(_train())
            ),
            work=fr.work,
            hint="",
        )[0]

    p = fr.plan(study, args.seeds, args.config, args.aspects)
    for aspect in p.aspects:  # every aspect's data is there and splits, before anything runs
        pool.get(fr.run_config(p.entries[0], aspect, p.seeds[0]))
    keys = {fr.run_key(e, a, s) for e, a, s in p.runs()}
    earlier = fr.load_runs(study)  # None before the first hpo final
    left = keys - set(fr.collect(earlier))
    job = None
    if args.slurm is not None and left:  # sbatch checks the script before anything is recorded
        job = slurm.prepare(args, study.study_name, _child(args, study.study_name, "epochs"),
                            "hpo final worker")  # fmt: skip
        if job is None:
            return 0
    elif args.slurm is not None:
        print(fit("every run of this table has finished: nothing to submit"), flush=True)
    fr.ensure_floors(study, p, pool, device)
    command = " ".join(["hpo", *args.argv])
    for line in fr.register(study, p, command, earlier):
        print(fit(line), file=sys.stderr, flush=True)
    companion = fr.open_runs(study, storage)
    cf.fail_dead_runs(companion)
    fr.queue(companion, p)

    def finished(trials) -> int:  # this table's runs only, each once
        ended = (TrialState.COMPLETE, TrialState.PRUNED)
        return len({fr.key_of(t) for t in trials if t.state in ended} & keys)

    runs = companion.get_trials(deepcopy=False)
    done = finished(runs)
    todo = len({fr.key_of(t) for t in runs if t.state == TrialState.WAITING} & keys)
    print(
        fit(
            f"final table of study {study.study_name!r}: {fr.plural(len(p.entries))} x "
            f"{fr.plural(len(p.aspects), 'aspect')} x {len(p.seeds)} seeds = {len(keys)} runs, "
            f"{done} done, "
            f"{todo} to do (runs are trials of study {companion.study_name!r})"
        ),
        flush=True,
    )
    for note in p.notes:
        print(fit(f"note: {note}"), flush=True)

    def objective(progress):
        return fr.FinalRun(study.study_name, device, pool, fit_fn=progress.batches(_train()))

    code, go_on = run_fleet(
        args,
        companion,
        job=job,
        done=done,
        todo=todo,
        gpus=gpus,
        label=run_label,
        line=run_line,
        what="final runs",
        child=lambda lines: _child(args, study.study_name, lines),
        recover=lambda: (cf.fail_dead_runs(companion), fr.queue(companion, p)),
        objective=objective,
        work=fr.work,
        hint=f"once it is done, `{_rerun(args, study.study_name)}` builds the table",
        count=finished,
    )
    if not go_on:
        return code
    table = fr.summarize(study, p, companion)
    fr.store(study, table)
    paths = write_all(table)
    print(text(table))
    folder = paths["markdown"].parent
    names = ", ".join(p.name for p in paths.values())
    print(fit(f"wrote {names} in {_shown(folder)}"))
    if code in (130, 143):
        print(
            "interrupted: finished runs are kept; re-run the same command to do the rest",
            file=sys.stderr,
        )
    return code
