"""``handreid train|evaluate|synth|inspect``."""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from handreid.devices import check_device_name
from handreid.errors import DataError, UserError, cli_exit
from handreid.files import check_checkpoint_path

METRIC_KEYS = ("rank1", "rank5", "rank10", "mAP")


def _cmd_synth(args: argparse.Namespace) -> int:
    from handreid.data.synthetic import write_synthetic

    out = write_synthetic(
        args.out,
        ids=args.ids,
        per_id=args.per_id,
        size=args.size,
        seed=args.seed,
        force=args.force,
    )
    print(f"wrote {args.ids} identities x {args.per_id} images x 4 aspects to {out}")
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    from handreid.data.inspect import format_inspect, inspect_data

    report = inspect_data(args.data, dataset=args.dataset, aspects=args.aspects)
    print(json.dumps(report, indent=2) if args.json else format_inspect(report))
    bad = report["images_unreadable_used"]
    if bad:  # the report is printed in full first: it is what the user needs to fix the data
        more = f" and {len(bad) - 1} more" if len(bad) > 1 else ""
        raise DataError(
            f"{len(bad)} image(s) a run would use cannot be decoded ({bad[0]}{more}); "
            "train refuses this data until they are replaced or removed"
        )
    return 0


def _setup_logging(quiet: bool = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    log = logging.getLogger("handreid")
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def _cmd_train(args: argparse.Namespace) -> int:
    # the config and the output folder are checked before torch and open_clip load (seconds)
    from handreid.config import TrainConfig, config_warnings
    from handreid.files import check_run_folder, write_run_folder

    cfg = TrainConfig.from_yaml(args.config, args.set)
    if args.data:
        cfg = cfg.replace(data_root=args.data)
    if args.refit:
        cfg = cfg.replace(refit=True)
    if not cfg.data_root:
        raise UserError("no data: set data_root in the config or pass --data DIR")
    # absolute, so that `evaluate --checkpoint` finds the data from any folder
    cfg = cfg.replace(data_root=str(Path(cfg.data_root).expanduser().resolve()))
    for message in config_warnings(cfg):
        warnings.warn(message, UserWarning, stacklevel=1)
    out = (
        Path(args.out)
        if args.out
        else Path("runs") / f"{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    )
    # Everything that can fail on user input (output folder, data, images, batch size, model
    # weights) fails before training, and nothing is written until the run is complete.
    check_run_folder(out, args.overwrite)
    from handreid.checkpoint import save_checkpoint
    from handreid.data.inspect import check_batches
    from handreid.engine import fit, prepare_data, test_report
    from handreid.evaluation import NonFiniteError
    from handreid.models import build_model

    _setup_logging(args.quiet)
    data = prepare_data(cfg)
    check_batches(cfg, data.train_labels.tolist())
    build_model(cfg, data.num_classes, data.aspects)
    with logging_redirect_tqdm(loggers=[logging.getLogger("handreid")]):
        result = fit(cfg, data=data, device=args.device, progress=not args.quiet)
    try:
        test = test_report(result.model, result.data, cfg, args.device)
    except NonFiniteError as exc:  # diverged before any finite epoch: no model worth a run
        raise UserError(
            f"training {result.status} after {result.epochs_run} epoch(s) and left no model with "
            f"finite test features ({exc}); nothing was written (lower the learning rates?)"
        ) from None
    metrics = {
        "status": result.status,
        # a refit has no validation identities: its model is the last epoch's
        "val": None if cfg.refit else {**result.best, "epoch": result.best_epoch + 1},
        "refit": cfg.refit,
        "identities": data.splits.identity_lists(),
        "test": test,
        "epochs_run": result.epochs_run,
        "seconds": round(result.seconds, 2),
        "history": result.history,
    }

    def write(folder: Path) -> None:
        cfg.save(folder / "config.yaml", header=f"resolved config of {out}")
        save_checkpoint(
            folder / "best.pt",
            result.model,
            cfg,
            num_classes=data.num_classes,
            aspects=data.aspects,
            val=metrics["val"] or {},
            test=test,
        )
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2))

    write_run_folder(out, write, overwrite=args.overwrite)
    if cfg.refit:
        print(f"status {result.status}; refit on all training-side identities, {cfg.epochs} epochs")
    else:
        print(
            f"status {result.status}; best epoch {result.best_epoch + 1}: "
            f"val mAP {result.best_map:.4f}"
        )
    print(_format_test(test))
    print(f"wrote {out}/config.yaml, metrics.json, best.pt")
    return 0 if result.status != "diverged" else 1


def _format_test(test: dict) -> str:
    from handreid.text import pm

    sign = pm()
    parts = [f"{k} {100 * test[k]:.2f} {sign} {100 * test[k + '_std']:.2f}" for k in METRIC_KEYS]
    return f"test ({test.get('num_splits', '?')} splits): " + ", ".join(parts)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    # the arguments are checked before torch and open_clip load (seconds)
    check_device_name(args.device)
    if args.floors:
        return _evaluate_floors(args)
    if args.config:
        raise UserError(
            "evaluate --config goes with --floors; a checkpoint carries its own config "
            "(--checkpoint FILE)"
        )
    if not args.checkpoint:
        raise UserError("evaluate needs --checkpoint FILE (a best.pt), or --floors --config FILE")
    check_checkpoint_path(args.checkpoint)

    from handreid.checkpoint import compare_stored_test, format_comparison, load_checkpoint
    from handreid.engine import prepare_data, resolve_device, test_report
    from handreid.evaluation import NonFiniteError

    device = resolve_device(args.device)
    model, cfg, payload = load_checkpoint(args.checkpoint, device)
    if args.data:
        cfg = cfg.replace(data_root=args.data)
    elif not Path(cfg.data_root).expanduser().is_dir():
        raise UserError(
            f"the checkpoint's data_root {cfg.data_root!r} is not a folder here; "
            "pass --data DIR to point at the dataset it was trained on"
        )
    data = prepare_data(cfg)
    if data.num_classes != payload["num_classes"]:
        raise UserError(
            f"the data has {data.num_classes} training identities but the checkpoint was trained on "
            f"{payload['num_classes']}; evaluate on the dataset and split it was trained with"
        )
    try:
        test = test_report(model, data, cfg, device)
    except NonFiniteError as exc:  # finite weights can still overflow to inf
        raise UserError(f"{args.checkpoint}: {exc}; no metrics were computed") from None
    stored_root = Path(payload["config"].get("data_root") or ".").expanduser().resolve()
    same_root = Path(cfg.data_root).expanduser().resolve() == stored_root
    note = format_comparison(compare_stored_test(payload, test, same_root))
    if args.json:
        print(json.dumps(test, indent=2))
        if note:  # stdout stays one JSON object: the report, as it was saved
            warnings.warn(note, UserWarning, stacklevel=1)
        return 0
    print(_format_test(test))
    if note:
        print(note)
    return 0


def _evaluate_floors(args: argparse.Namespace) -> int:
    """``evaluate --floors --config C [--data D]``: what no training reaches on C's data."""
    from handreid.config import TrainConfig

    if args.checkpoint:
        raise UserError(
            "evaluate --floors takes --config FILE, not --checkpoint: the floors need no "
            "trained model"
        )
    if not args.config:
        raise UserError("evaluate --floors needs --config FILE (a trainer YAML)")
    cfg = TrainConfig.from_yaml(args.config)
    if args.data:
        cfg = cfg.replace(data_root=args.data)
    if not cfg.data_root:
        raise UserError("no data: set data_root in the config or pass --data DIR")

    from handreid.engine import resolve_device
    from handreid.evaluation import NonFiniteError
    from handreid.floors import compute_floors, format_floors

    device = resolve_device(args.device)
    try:
        floors = compute_floors(cfg, device=device)
    except NonFiniteError as exc:  # pixels are finite: the backbone's weights are not
        raise UserError(
            f"{cfg.model} with pretrained={cfg.pretrained!r} gives {exc}: damaged or diverged "
            "weights, whose floors would mean nothing"
        ) from None
    if args.json:
        record = floors.record()
        for kind in ("pixels", "backbone"):
            record[kind] = dict(zip(("val", "test"), record[kind], strict=True))
        print(json.dumps(record, indent=2))
    else:
        print(format_floors(floors))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from handreid.clihelp import HelpFormatter

    parser = argparse.ArgumentParser(
        prog="handreid", description=__doc__, formatter_class=HelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, formatter_class=HelpFormatter)

    p = command("synth", "write a synthetic hands dataset in the 11k layout")
    p.add_argument(
        "--out", required=True, help="dataset folder to write (new, or written by synth)"
    )
    p.add_argument("--ids", type=int, default=40, help="identities (people)")
    p.add_argument("--per-id", type=int, default=8, help="images per identity and aspect")
    p.add_argument("--size", type=int, default=96, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated shapes and colours")
    p.add_argument(
        "--force", action="store_true", help="replace a set that synth wrote there before"
    )
    p.set_defaults(func=_cmd_synth)

    p = command("inspect", "check a dataset folder and report what a run would use")
    p.add_argument("--data", required=True, help="dataset root folder")
    p.add_argument(
        "--dataset",
        choices=["auto", "11k", "hd", "folder"],
        default="auto",
        help="layout of the folder; auto tells it from the files",
    )
    p.add_argument(
        "--aspects",
        nargs="+",
        default=["all"],
        help="aspects a run would use, e.g. 'dorsal right', or all",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_inspect)

    p = command("train", "train one config; writes config.yaml, metrics.json, best.pt")
    p.add_argument("--config", required=True, help="trainer YAML (e.g. an `hpo export` file)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one key (YAML-typed value); repeatable",
    )
    p.add_argument("--data", help="dataset root (default: the config's data_root)")
    p.add_argument("--out", help="output folder (default runs/<model>-<time>)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace an earlier run in the --out folder"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument(
        "--refit",
        action="store_true",
        help="train on train+val identities for `epochs` epochs (no validation, the last epoch "
        "is kept) and report test: the published protocol's final model (same as --set refit=true)",
    )
    p.set_defaults(func=_cmd_train)

    p = command(
        "evaluate",
        "re-run the test report of a checkpoint, or (--floors) print a config's floors",
    )
    p.add_argument("--checkpoint", help="a best.pt written by `handreid train`")
    p.add_argument(
        "--floors",
        action="store_true",
        help="val and test mAP of what needs no training: raw pixels at the input size, and "
        "the backbone as loaded (zero-shot CLIP, or the untrained tower for pretrained: none); "
        "needs --config",
    )
    p.add_argument("--config", help="trainer YAML whose data and split the floors use")
    p.add_argument(
        "--data", help="dataset root (default: the checkpoint's or the config's data_root)"
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_evaluate)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


def main(argv: Sequence[str] | None = None) -> None:
    cli_exit(run, argv)


if __name__ == "__main__":
    main()
