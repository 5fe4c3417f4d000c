"""Every CLI error path, in one table: (command, input, message fragment, exit code).

Each case runs in its own empty working folder (``{tmp}``) that its ``setup`` may fill. The
test asserts the exit code, that stderr is exactly one ``error:`` line holding the fragment,
that no Python traceback escapes, and that nothing was written: the working folder is
byte-identical afterwards and no study exists in any storage the case names.

Placeholders in ``args``: ``{tmp}`` the case's folder, ``{synthetic}`` a learnable synthetic
11k-layout set (shared, read-only), ``{sample}`` the real 11k Hands sample (cases using it
skip when it is absent).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml

from handreid.config import TrainConfig
from handreid.data.hands11k import COLUMNS
from tests.conftest import SHARED_11K, TINY


@dataclass(frozen=True)
class Case:
    id: str
    cli: str  # "hpo" | "handreid"
    args: tuple[str, ...]
    message: str
    code: int = 2
    setup: Setup | None = None  # prepares files in the case's folder
    env: tuple[tuple[str, str], ...] = ()  # environment variables ({tmp} filled in)


Setup = Callable[[Path, Path], None]  # (case folder, synthetic data root)


def config_with(extra: str, name: str = "tiny.yaml") -> Setup:
    """A valid tiny-vit trainer config on the synthetic set with the keys of ``extra`` (YAML)
    set; appending them as text would repeat keys, which configs refuse."""

    def setup(tmp: Path, synthetic: Path) -> None:
        cfg = TrainConfig(**TINY, data_root=str(synthetic), cache_dir=str(tmp.parent / "cache"))
        data = {**cfg.to_dict(), **(yaml.safe_load(extra) or {})}
        (tmp / name).write_text(yaml.safe_dump(data, sort_keys=False))

    return setup


def config_text(extra: str | bytes, name: str = "tiny.yaml") -> Setup:
    """A valid tiny-vit trainer config on the synthetic set followed by ``extra`` as raw text."""

    def setup(tmp: Path, synthetic: Path) -> None:
        cfg = TrainConfig(**TINY, data_root=str(synthetic), cache_dir=str(tmp.parent / "cache"))
        raw = extra if isinstance(extra, bytes) else extra.encode()
        (tmp / name).write_bytes(cfg.to_yaml().encode() + raw)

    return setup


def write(name: str, content: str | bytes) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)

    return setup


def executable(name: str, content: str) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        write(name, content)(tmp, synthetic)
        (tmp / name).chmod(0o755)

    return setup


def both(*setups: Setup) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        for s in setups:
            s(tmp, synthetic)

    return setup


# ---- handreid: train, evaluate, synth, inspect ----------------------------------------------
def synth_set(name: str = "data", mutate: Callable[[Path], None] | None = None) -> Setup:
    """A small synthetic 11k set in the case's folder (8 ids x 3 images x 4 aspects, 16 px)."""

    def setup(tmp: Path, synthetic: Path) -> None:
        from handreid.data.synthetic import write_synthetic

        root = write_synthetic(tmp / name, ids=8, per_id=3, size=16)
        if mutate:
            mutate(root)

    return setup


def csv_set(
    rows: list[str], header: str = ",".join(COLUMNS), images: bool = True, hands: bool = True
) -> Setup:
    """An 11k folder ``data``: HandInfo.csv is ``header`` + ``rows``; images are empty files
    (the loader checks only that they exist), or absent; ``hands=False``: no Hands/ folder."""

    def setup(tmp: Path, synthetic: Path) -> None:
        (tmp / "data").mkdir()
        (tmp / "data" / "HandInfo.csv").write_text("\n".join([header, *rows]) + "\n")
        if not hands:
            return
        (tmp / "data" / "Hands").mkdir()
        for row in rows if images else ():
            name = next((c for c in row.split(",") if c.startswith("Hand_")), None)
            if name:
                (tmp / "data" / "Hands" / name).write_bytes(b"")

    return setup


def rows(aspect: str = "dorsal right", ids: int = 6, per_id: int = 3, acc: str = "0") -> list[str]:
    return [
        f"{i:07d},30,male,fair,{acc},0,{aspect},Hand_{i:03d}{n}.jpg,0"
        for i in range(ids)
        for n in range(per_id)
    ]


def append_to(name: str, content: bytes) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        with open(root / name, "ab") as f:
            f.write(content)

    return mutate


def replace_in_csv(old: bytes, new: bytes) -> Callable[[Path], None]:
    def mutate(root: Path) -> None:
        path = root / "HandInfo.csv"
        path.write_bytes(path.read_bytes().replace(old, new, 1))

    return mutate


def break_image(root: Path) -> None:
    (root / "Hands" / "Hand_0000000.jpg").write_bytes(b"not a jpeg")


def fifo_image(root: Path) -> None:
    """A dorsal-right image replaced by a FIFO, which open() would wait on forever."""
    (root / "Hands" / "Hand_0000001.jpg").unlink()
    os.mkfifo(root / "Hands" / "Hand_0000001.jpg")


def times_nan(payload: dict) -> None:
    for value in payload["state_dict"].values():
        if value.is_floating_point():
            value.mul_(float("nan"))


def nan_backbone(tmp: Path, synthetic: Path) -> None:
    """tiny.yaml whose ``pretrained`` is an open_clip tiny-vit state dict of NaN."""
    from handreid.models import load_clip, resolve_model_name

    clip = load_clip(resolve_model_name("tiny-vit"), "none", (64, 64))
    payload = {"state_dict": clip.state_dict()}
    times_nan(payload)
    torch.save(payload["state_dict"], tmp / "nan.pt")
    config_with(f"pretrained: {tmp / 'nan.pt'}")(tmp, synthetic)


def run_folder(name: str, files: tuple[str, ...]) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        (tmp / name).mkdir()
        for f in files:
            (tmp / name / f).write_text(f"earlier {f}")

    return setup


def checkpoint_file(name: str = "best.pt", num_classes: int = 21, **changes) -> Setup:
    """A tiny-vit checkpoint of the synthetic set's config (``changes`` applied), untrained."""

    def setup(tmp: Path, synthetic: Path) -> None:
        from handreid.checkpoint import save_checkpoint
        from handreid.models import build_model

        cfg = TrainConfig(**TINY, data_root=str(synthetic), cache_dir=str(tmp.parent / "cache"))
        cfg = cfg.replace(**changes)
        model = build_model(cfg, num_classes, cfg.aspects)
        save_checkpoint(tmp / name, model, cfg, num_classes=num_classes, aspects=cfg.aspects)

    return setup


def edited_checkpoint(edit: Callable[[dict], object]) -> Setup:
    """The tiny checkpoint of ``checkpoint_file``, its payload changed by ``edit``."""

    def setup(tmp: Path, synthetic: Path) -> None:
        checkpoint_file()(tmp, synthetic)
        payload = torch.load(tmp / "best.pt", weights_only=True)
        edit(payload)
        torch.save(payload, tmp / "best.pt")

    return setup


def torch_file(name: str, payload: object) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        torch.save(payload, tmp / name)

    return setup


def hd_set(ids: range) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        (tmp / "data" / "Original Images").mkdir(parents=True)
        for i in ids:
            for n in (1, 2):
                (tmp / "data" / "Original Images" / f"{i}_{n}.jpg").write_bytes(b"")

    return setup


RUN = ("run", "--backbone", "tiny-vit", "--quiet")
TRAIN = ("train", "--config", "{tmp}/tiny.yaml", "--out", "{tmp}/run", "--quiet")
TRAIN_ON = (*TRAIN, "--data", "{tmp}/data")
EVALUATE = ("evaluate", "--checkpoint", "{tmp}/best.pt")
FLOORS = ("evaluate", "--floors", "--config", "{tmp}/tiny.yaml")
SYNTH = ("synth", "--ids", "2", "--per-id", "2", "--size", "16", "--out")


def train(case_id: str, message: str, *extra: str, setup: Setup | None = None, **kw) -> Case:
    """A ``handreid train`` case on the tiny config; ``setup`` runs after writing it (and may
    write tiny.yaml anew)."""
    base = config_with("")
    return Case(
        case_id,
        "handreid",
        (*TRAIN, *extra),
        message,
        setup=both(base, setup) if setup else base,
        **kw,
    )


def train_on(case_id: str, message: str, data: Setup, *extra: str) -> Case:
    """A ``handreid train`` case on the tiny config with ``--data {tmp}/data`` made by ``data``."""
    return Case(
        case_id, "handreid", (*TRAIN_ON, *extra), message, setup=both(config_with(""), data)
    )


HANDREID_CASES = [
    train(
        "train-confirm-run-without-confirm-identities",
        "confirm_run needs confirm identities: set confirm_fraction above 0",
        "--set",
        "confirm_run=true",
    ),
    # -- config file and --set
    train(
        "train-unknown-key",
        "unknown key 'lr_modlues'; did you mean 'lr_modules'?",
        setup=config_with("lr_modlues: 0.1"),
    ),
    train(
        "train-not-an-int", "epochs='many': expected an integer", setup=config_with("epochs: many")
    ),
    train(
        "train-margin-range",
        "arcface_margin=3.0 is out of range",
        setup=config_with("arcface_margin: 3.0"),
    ),
    train("train-set-range", "bnneck_dim=0 is out of range", "--set", "bnneck_dim=0"),
    train("train-missing-data", "does not exist", "--data", "/no/such/folder"),
    Case(
        "train-missing-config",
        "handreid",
        ("train", "--config", "{tmp}/none.yaml", "--out", "{tmp}/run"),
        "config file not found",
    ),
    train(
        "train-duplicate-key",
        "tiny.yaml: duplicate key 'epochs' (line",
        setup=config_text("epochs: 3\n"),
    ),
    train(
        "train-non-utf8-config",
        "tiny.yaml: not UTF-8 text (byte 0xe9",
        setup=write("tiny.yaml", b"model: tiny-vit\n# caf\xe9\n"),
    ),
    train(
        "train-invalid-yaml",
        "tiny.yaml: not valid YAML (line 2)",
        setup=write("tiny.yaml", "model: [tiny-vit\n"),
    ),
    train(
        "train-yaml-bad-date",
        "not valid YAML (line 1): cannot read '2001-13-01' as timestamp (month must be in 1..12)",
        setup=write("tiny.yaml", "epochs: 2001-13-01\n"),
    ),
    train(
        "train-yaml-too-deep",
        "not valid YAML: nested too deeply",
        setup=write("tiny.yaml", "epochs: " + "[" * 3000 + "]" * 3000 + "\n"),
    ),
    train(
        "train-config-not-a-mapping",
        "expected a mapping of keys to values",
        setup=write("tiny.yaml", "- epochs\n- 3\n"),
    ),
    *(
        train(
            f"train-config-{kind}",
            "tiny.yaml: the config sets nothing (it is empty, only comments or {})",
            setup=write("tiny.yaml", text),
        )
        for kind, text in (("empty", ""), ("only-comments", "# to do\n\n"), ("empty-map", "{}\n"))
    ),
    train(
        "train-seed-negative",
        "seed=-1 is out of range; allowed [0, 4294967295]",
        setup=config_with("seed: -1"),
    ),
    train(
        "train-seed-huge",
        "seed=99999999999 is out of range; allowed [0, 4294967295]",
        "--set",
        "seed=99999999999",
    ),
    train("train-seed-inf", "seed=inf: expected an integer", "--set", "seed=.inf"),
    train("train-set-no-equals", "--set expects key=value, got 'epochs'", "--set", "epochs"),
    train(
        "train-set-unknown-key", "unknown key 'epoch'; did you mean 'epochs'?", "--set", "epoch=1"
    ),
    train("train-not-a-bool", "amp='on': expected true or false", setup=config_with("amp: 'on'")),
    train("train-not-a-number", "lr_modules='fast': expected a number", "--set", "lr_modules=fast"),
    train("train-not-a-string", "model=[1, 2]: expected a string", "--set", "model=[1, 2]"),
    train(
        "train-choice",
        "classifier='cosface' is not allowed; choose one of ['linear', 'arcface']",
        setup=config_with("classifier: cosface"),
    ),
    train(
        "train-batch-not-pxk",
        "batch_size must be a multiple of num_instances",
        "--set",
        "batch_size=30",
    ),
    train(
        "train-image-size",
        "image_size=[8, 8] is out of range; each side in [16, 1024]",
        "--set",
        "image_size=8",
    ),
    train(
        "train-image-size-shape",
        "expected [height, width] as two integers",
        "--set",
        "image_size=[64]",
    ),
    train("train-empty-model", "model is empty", setup=config_with("model: ''")),
    train(
        "train-template-field",
        "unknown field {finger}",
        setup=config_with("prompt_template: 'A {} {finger} hand.'"),
    ),
    train(
        "train-template-twice",
        "use the {} placeholder at most once",
        setup=config_with("prompt_template: 'A {} {} hand.'"),
    ),
    train(
        "train-template-format",
        "Replacement index 1 out of range",
        setup=config_with("prompt_template: 'A {:{}} hand.'"),
    ),
    train(
        "train-template-unbalanced",
        "prompt_template='A {aspect hand.'",
        setup=config_with("prompt_template: 'A {aspect hand.'"),
    ),
    train(
        "train-aspect-unknown", "unknown aspect 'dorsal middle'", "--set", "aspects=dorsal middle"
    ),
    train(
        "train-aspect-twice", "lists an aspect twice", "--set", "aspects=[dorsal left, dorsal left]"
    ),
    train("train-aspects-empty", "aspects is empty", "--set", "aspects=[]"),
    train(
        "train-no-data-root",
        "no data: set data_root in the config or pass --data DIR",
        setup=config_with("data_root: ''"),
    ),
    # -- the output folder, checked before any data is read
    train("train-out-is-a-file", "--out", setup=write("run", "a file")),
    train(
        "train-out-holds-a-run",
        "already holds a run; pass --overwrite",
        setup=run_folder("run", ("config.yaml", "best.pt")),
    ),
    train(
        "train-out-holds-other-files",
        "holds 'notes.txt', which no handreid run writes",
        "--overwrite",
        setup=run_folder("run", ("notes.txt", "best.pt")),
    ),
    Case(
        "train-out-under-a-file",
        "handreid",
        ("train", "--config", "{tmp}/tiny.yaml", "--out", "{tmp}/taken/run"),
        "taken is a file, not a folder",
        setup=both(config_with(""), write("taken", "x")),
    ),
    # -- data: layouts, CSV, images, splits
    train_on("train-11k-no-csv", "HandInfo.csv not found", write("data/readme.txt", "x")),
    train_on(
        "train-11k-wrong-layout", "(the folder looks like the 'hd' layout)", hd_set(range(1, 9))
    ),
    train_on(
        "train-11k-missing-column",
        "missing column(s) imageName",
        csv_set(
            rows(),
            header="id,age,gender,skinColor,accessories,nailPolish,aspectOfHand,irregularities",
        ),
    ),
    train_on(
        "train-11k-short-row",
        "line 3: 7 cell(s), so no imageName",
        csv_set(
            [
                "0000001,30,male,fair,0,0,dorsal right,Hand_0011.jpg,0",
                "0000001,30,male,fair,0,0,dorsal right",
            ]
        ),
    ),
    train_on(
        "train-11k-non-utf8-csv",
        "HandInfo.csv: not UTF-8 text (byte 0xe4",
        synth_set(mutate=replace_in_csv(b"male", b"m\xe4le")),
    ),
    train_on(
        "train-11k-unparsable-csv",
        "not a readable CSV row (field larger than field limit",
        synth_set(mutate=append_to("HandInfo.csv", b"1," + b"x" * 200_000 + b"\n")),
    ),
    train_on(
        "train-11k-accessories",
        "accessories='yes' for 'Hand_0000000.jpg' is not 0 or 1",
        synth_set(mutate=replace_in_csv(b'"medium",0,', b'"medium","yes",')),
    ),
    train_on("train-11k-no-hands-folder", "Hands not found", csv_set(rows(), hands=False)),
    train_on(
        "train-11k-no-image-present",
        "none of the 18 images listed in HandInfo.csv exist",
        csv_set(rows(), images=False),
    ),
    train_on(
        "train-11k-nothing-after-filtering",
        "no identity left after filtering (aspects ['palmar left'], accessories == 0)",
        csv_set(rows() + rows("palmar left", acc="1")),
        "--set",
        "aspects=palmar left",
    ),
    train_on(
        "train-11k-no-evaluable-identity",
        "no identity has 2 or more images",
        csv_set(rows(per_id=1)),
    ),
    train_on("train-unreadable-image", "image(s) could not be read", synth_set(mutate=break_image)),
    train_on(
        "train-fifo-image",
        "data/Hands/Hand_0000001.jpg is a FIFO (named pipe), not an image file",
        synth_set(mutate=fifo_image),
    ),
    train_on(
        "train-hd-on-11k-data",
        "Original Images not found; an HD folder holds 'Original Images/<id>_<n>.jpg' "
        "(the folder looks like the '11k' layout)",
        synth_set(),
        "--set",
        "dataset=hd",
    ),
    train_on(
        "train-one-subject",
        "only 1 subject has 2 or more images; a random split needs at least 2",
        both(*(write(f"data/alice/{n}.jpg", b"") for n in range(3))),
        "--set",
        "dataset=folder",
    ),
    train_on(
        "train-hd-only-distractors",
        "no identity left",
        hd_set(range(502, 510)),
        "--set",
        "dataset=hd",
    ),
    train_on(
        "train-folder-without-images",
        "no identity left",
        write("data/alice/readme.txt", "x"),
        "--set",
        "dataset=folder",
    ),
    train_on(
        "train-published-on-folders",
        "split='published' is defined only for 11k",
        both(*(write(f"data/id{k}/{n}.jpg", b"") for k in range(6) for n in range(2))),
        "--set",
        "dataset=folder",
        "--set",
        "split=published",
    ),
    # -- after the data is decoded, still before training
    train(
        "train-batch-larger-than-the-data",
        "batch_size=128 with num_instances=4 needs 32 training identities per batch (P x K), but the training split has 21",
        "--set",
        "batch_size=128",
    ),
    train("train-unknown-model", "unknown model 'resnet9000'", "--set", "model=resnet9000"),
    train(
        "train-weights-unavailable",
        "pretrained='openai' is neither a file",
        "--set",
        "pretrained=openai",
    ),
    train("train-bad-device", "--device 'gpu': expected auto, cpu, cuda", "--device", "gpu"),
    *(
        []
        if torch.cuda.is_available()
        else [
            train("train-no-cuda", "no CUDA device is available here; use cpu", "--device", "cuda")
        ]
    ),
    # -- evaluate
    Case("evaluate-missing-checkpoint", "handreid", EVALUATE, "checkpoint not found"),
    Case(
        "evaluate-not-a-checkpoint",
        "handreid",
        EVALUATE,
        "not a handreid checkpoint (UnpicklingError)",
        setup=write("best.pt", b"garbage"),
    ),
    Case(
        "evaluate-other-format",
        "handreid",
        EVALUATE,
        "not a handreid checkpoint (format 1 expected)",
        setup=torch_file("best.pt", {"format": 99}),
    ),
    Case(
        "evaluate-data-root-gone",
        "handreid",
        EVALUATE,
        "the checkpoint's data_root '/no/such/data' is not a folder here; pass --data DIR",
        setup=checkpoint_file(data_root="/no/such/data"),
    ),
    Case(
        "evaluate-other-data",
        "handreid",
        EVALUATE,
        "the data has 21 training identities but the checkpoint was trained on 5",
        setup=checkpoint_file(num_classes=5),
    ),
    Case(
        "evaluate-checkpoint-missing-weights",
        "handreid",
        EVALUATE,
        "its weights do not match the model its config builds: missing ",
        setup=edited_checkpoint(lambda p: p["state_dict"].popitem()),
    ),
    Case(
        "evaluate-checkpoint-wrong-shape",
        "handreid",
        EVALUATE,
        "has shape [1, 1], the model's is",
        setup=edited_checkpoint(
            lambda p: p["state_dict"].update({next(iter(p["state_dict"])): torch.zeros(1, 1)})
        ),
    ),
    Case(
        "evaluate-checkpoint-no-aspects",
        "handreid",
        EVALUATE,
        "not a usable handreid checkpoint: it has no 'aspects'",
        setup=edited_checkpoint(lambda p: p.pop("aspects")),
    ),
    Case(
        "evaluate-checkpoint-unknown-aspect",
        "handreid",
        EVALUATE,
        "unknown aspect 'dorsal lefty' in 'aspects'",
        setup=edited_checkpoint(lambda p: p.update(aspects=["dorsal lefty"])),
    ),
    Case(
        "evaluate-checkpoint-nan-weights",
        "handreid",
        EVALUATE,
        "best.pt: weight image.visual.class_embedding holds 64 of 64 values that are not finite",
        setup=edited_checkpoint(times_nan),
    ),
    Case(
        "evaluate-checkpoint-one-inf-weight",
        "handreid",
        EVALUATE,
        "best.pt: weight neck.bn.bias holds 1 of 64 values that are not finite (NaN or inf)",
        setup=edited_checkpoint(
            lambda p: p["state_dict"]["neck.bn.bias"].__setitem__(3, float("inf"))
        ),
    ),
    Case(
        "evaluate-features-overflow",
        "handreid",
        EVALUATE,
        "best.pt: the features of 116 images: 7424 of 7424 values are not finite (NaN or inf)",
        setup=edited_checkpoint(  # finite weights whose features overflow
            lambda p: p["state_dict"]["fusion.blocks.0.mlp.3.weight"].fill_(3e38)
        ),
    ),
    Case(
        "evaluate-bad-device",
        "handreid",
        (*EVALUATE, "--device", "gpu"),
        "--device 'gpu': expected auto, cpu, cuda",
    ),
    # -- evaluate --floors
    Case("evaluate-nothing", "handreid", ("evaluate",), "evaluate needs --checkpoint FILE"),
    Case(
        "evaluate-config-without-floors",
        "handreid",
        ("evaluate", "--config", "{tmp}/tiny.yaml"),
        "evaluate --config goes with --floors",
        setup=config_with(""),
    ),
    Case(
        "evaluate-floors-no-config",
        "handreid",
        ("evaluate", "--floors"),
        "evaluate --floors needs --config FILE",
    ),
    Case(
        "evaluate-floors-and-checkpoint",
        "handreid",
        (*FLOORS, "--checkpoint", "{tmp}/best.pt"),
        "evaluate --floors takes --config FILE, not --checkpoint",
        setup=config_with(""),
    ),
    Case("evaluate-floors-missing-config", "handreid", FLOORS, "config file not found"),
    Case(
        "evaluate-floors-empty-config",
        "handreid",
        FLOORS,
        "tiny.yaml: the config sets nothing",
        setup=write("tiny.yaml", "# nothing yet\n"),
    ),
    Case(
        "evaluate-floors-bad-config",
        "handreid",
        FLOORS,
        "unknown key 'lr_modlues'; did you mean 'lr_modules'?",
        setup=config_with("lr_modlues: 0.1"),
    ),
    Case(
        "evaluate-floors-missing-data",
        "handreid",
        (*FLOORS, "--data", "/no/such/folder"),
        "does not exist",
        setup=config_with(""),
    ),
    Case(
        "evaluate-floors-no-data",
        "handreid",
        FLOORS,
        "no data: set data_root in the config or pass --data DIR",
        setup=config_with("data_root: ''"),
    ),
    Case(
        "evaluate-floors-weights-unavailable",
        "handreid",
        FLOORS,
        "pretrained='openai' is neither a file nor an open_clip tag of tiny-vit",
        setup=config_with("pretrained: openai"),
    ),
    Case(
        "evaluate-floors-nan-backbone",
        "handreid",
        FLOORS,
        "nan.pt' gives the features of 66 images: 4224 of 4224 values are not finite (NaN or inf)",
        setup=nan_backbone,
    ),
    Case(
        "evaluate-floors-bad-device",
        "handreid",
        (*FLOORS, "--device", "gpu"),
        "--device 'gpu': expected auto, cpu, cuda",
        setup=config_with(""),
    ),
    # -- synth: never destroys data
    Case(
        "synth-into-an-11k-copy",
        "handreid",
        (*SYNTH, "{tmp}/data"),
        "is not empty and was not written by synth; nothing was changed",
        setup=csv_set(rows()),
    ),
    Case(
        "synth-force-into-an-11k-copy",
        "handreid",
        (*SYNTH, "{tmp}/data", "--force"),
        "is not empty and was not written by synth",
        setup=csv_set(rows()),
    ),
    Case(
        "synth-over-its-own-set",
        "handreid",
        (*SYNTH, "{tmp}/data"),
        "holds a synthetic set written earlier; pass --force to replace it",
        setup=synth_set(),
    ),
    Case(
        "synth-force-with-other-files",
        "handreid",
        (*SYNTH, "{tmp}/data", "--force"),
        "now also holds notes.txt; --force replaces only what synth wrote",
        setup=both(synth_set(), write("data/notes.txt", "mine")),
    ),
    Case(
        "synth-out-is-a-file",
        "handreid",
        (*SYNTH, "{tmp}/taken"),
        "is a file; synth writes a dataset folder",
        setup=write("taken", "x"),
    ),
    Case(
        "synth-zero-ids",
        "handreid",
        ("synth", "--out", "{tmp}/new", "--ids", "0"),
        "ids=0 and per_id=8 must both be at least 1",
    ),
    Case(
        "synth-size",
        "handreid",
        ("synth", "--out", "{tmp}/new", "--size", "4"),
        "size=4 is out of range; allowed [16, 2048]",
    ),
    Case(
        "synth-negative-seed",
        "handreid",
        ("synth", "--out", "{tmp}/new", "--seed", "-1"),
        "seed=-1 must be a non-negative integer",
    ),
    # -- inspect
    Case(
        "inspect-missing-root",
        "handreid",
        ("inspect", "--data", "{tmp}/none"),
        "does not exist or is not a folder",
    ),
    Case(
        "inspect-unknown-layout",
        "handreid",
        ("inspect", "--data", "{tmp}/data"),
        "cannot tell the layout",
        setup=write("data/readme.txt", "x"),
    ),
    Case(
        "inspect-unknown-aspect",
        "handreid",
        ("inspect", "--data", "{synthetic}", "--aspects", "dorsal middle"),
        "unknown aspect 'dorsal middle'",
    ),
    Case(
        "inspect-short-row",
        "handreid",
        ("inspect", "--data", "{tmp}/data"),
        "line 98: 3 cell(s), so no accessories, aspectOfHand, imageName",
        setup=synth_set(mutate=append_to("HandInfo.csv", b"1,30,male\n")),
    ),
    Case(
        "inspect-unreadable-image",
        "handreid",
        ("inspect", "--data", "{tmp}/data"),
        "1 image(s) a run would use cannot be decoded (Hand_0000000.jpg)",
        setup=synth_set(mutate=break_image),
    ),
    Case(
        "inspect-fifo-image",
        "handreid",
        ("inspect", "--data", "{tmp}/data"),
        "data/Hands/Hand_0000001.jpg is a FIFO (named pipe), not an image file",
        setup=synth_set(mutate=fifo_image),
    ),
]


# ---- hpo: run, export, show, ls, report, dashboard, confirm -----------------------------
def study_in(
    where: str = "studies/handreid.db",
    name: str = "handreid-tiny-vit",
    trials: tuple[str, ...] = ("complete",),
    attrs: dict | None = None,
    record_config: bool = True,
) -> Setup:
    """A study like ``hpo run`` leaves, in an SQLite file (``*.db``) or a journal file
    (``record_config``: each trial records the tiny config it trained)."""

    def setup(tmp: Path, synthetic: Path) -> None:
        import optuna

        from hpo.records.storage import open_storage

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # stderr is the case's, not ours
        path = tmp / where
        path.parent.mkdir(parents=True, exist_ok=True)
        storage = f"sqlite:///{path}" if where.endswith(".db") else open_storage(str(path))
        study = optuna.create_study(study_name=name, storage=storage, direction="maximize")
        for key, value in (attrs or {}).items():
            study.set_user_attr(key, value)
        config = TrainConfig(**TINY, data_root=str(synthetic)).to_dict()
        for state in trials:
            trial = study.ask()
            trial.suggest_float("lr_modules", 1e-4, 1e-2, log=True)
            if record_config:
                trial.set_user_attr("config", config)
            if state == "complete":
                study.tell(trial, 0.5)
            else:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)

    return setup


def broken_history(text: str) -> Setup:
    """A study whose trial 0 has a ``history.json`` artifact holding ``text``."""

    def setup(tmp: Path, synthetic: Path) -> None:
        import optuna
        from optuna.artifacts import upload_artifact

        from hpo.records.artifacts import open_artifact_store

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        (tmp / "studies").mkdir(exist_ok=True)
        study = optuna.create_study(
            study_name="s", storage=f"sqlite:///{tmp}/studies/handreid.db", direction="maximize"
        )
        trial = study.ask()
        trial.report(0.5, 1)
        (tmp / "history.json").write_text(text)
        upload_artifact(
            artifact_store=open_artifact_store(tmp / "studies" / "artifacts"),
            file_path=str(tmp / "history.json"),
            study_or_trial=trial,
        )
        study.tell(trial, 0.5)

    return setup


def torn(where: str) -> Setup:
    """A journal whose last record a crash cut short."""

    def setup(tmp: Path, synthetic: Path) -> None:
        study_in(where)(tmp, synthetic)
        with open(tmp / where, "ab") as fh:
            fh.write(b'{"op_code":4,"worker_id":"a')

    return setup


def fifo_beside(tmp: Path, synthetic: Path) -> None:
    os.mkfifo(tmp.parent / "fifo")  # outside the case folder, whose snapshot would block on it


def link_to_folder(tmp: Path, synthetic: Path) -> None:
    (tmp / "link").symlink_to(tmp.parent)


def tiny_space(tmp: Path, synthetic: Path) -> dict:
    from hpo.records.space import load_space

    return load_space("tiny-vit").with_base(data_root=str(synthetic)).to_dict()


LONG = "x" * 300


def study_with_space(trials: tuple[str, ...] = ("complete",), where: str = "studies/handreid.db"):
    """A study that stored its search space, as ``hpo run`` makes them (for ``hpo confirm``)."""

    def setup(tmp: Path, synthetic: Path) -> None:
        attrs = {"space": tiny_space(tmp, synthetic)}
        study_in(where, trials=trials, attrs=attrs)(tmp, synthetic)

    return setup


CONFIRM = ("confirm", "--study", "handreid-tiny-vit")
FINAL = ("final", "--study", "handreid-tiny-vit")


def confirmed_study(tmp: Path, synthetic: Path, data: Path | None = None, **confirm) -> None:
    """A study with its space and a confirm that named trial 0 winner and baseline
    (``confirm``: keys of the summary to change; ``data``: the space's data root)."""
    summary = {
        "winner": 0,
        "reference_baseline": 0,
        "complete": True,
        "rows": [{"trial": 0, "epochs": 1}],
        "command": "hpo confirm --study handreid-tiny-vit --top 5 --seeds 3",
        **confirm,
    }
    space = tiny_space(tmp, data or synthetic)
    attrs = {"space": space, "confirm": summary}
    study_in(trials=("complete",), attrs=attrs, record_config=False)(tmp, synthetic)


def confirmed_with(**confirm) -> Setup:
    return lambda tmp, synthetic: confirmed_study(tmp, synthetic, **confirm)


def confirmed_on_hd(tmp: Path, synthetic: Path) -> None:
    """A confirmed study whose data is a PolyU HD folder (no aspects)."""
    images = tmp / "hd" / "Original Images"
    images.mkdir(parents=True)
    (images / "1_1.jpg").write_bytes(b"")
    confirmed_study(tmp, synthetic, data=tmp / "hd")


def chain(*setups: Setup) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        for s in setups:
            s(tmp, synthetic)

    return setup


SLURM = (*RUN, "--data", "{synthetic}", "--slurm")
# an sbatch that refuses every job as a cluster refuses an unknown partition
REFUSING_SBATCH = "#!/bin/sh\necho 'sbatch: error: invalid partition specified: nope' >&2\nexit 1\n"
NO_NODE = "Batch job submission failed: Requested node configuration is not available"


def sbatch_refusing(when: str, message: str = NO_NODE) -> str:
    """An sbatch refusing a job whose script has a line matching the shell pattern ``when``,
    as a cluster refuses GPUs (or memory) no node has; shell builtins only, as PATH is bare."""
    return (
        '#!/bin/sh\nwhile read -r line; do case "$line" in '
        f"{when}) echo 'sbatch: error: {message}' >&2; exit 1;; esac; done\nexit 0\n"
    )


HPO_CASES = [
    Case(
        "run-unknown-backbone",
        "hpo",
        ("run", "--backbone", "rn5", "--data", "{synthetic}"),
        "argument --backbone: invalid choice: 'rn5' (choose from 'rn50', 'tiny-rn', 'tiny-vit', "
        "'vitb16')",
    ),
    Case(
        "run-missing-data",
        "hpo",
        (*RUN, "--data", "/no/such/data"),
        "dataset folder not found: /no/such/data",
    ),
    Case(
        "run-postgres-unreachable",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "postgresql://u:p@127.0.0.1:9/none"),
        "cannot open storage",
    ),
    Case(
        "run-sqlite-folder-missing",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "sqlite:///no/such/dir/x.db"),
        "folder no/such/dir does not exist",
    ),
    Case(
        "run-unknown-sampler",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--sampler", "grid"),
        "argument --sampler: invalid choice: 'grid' (choose from 'tpe', 'random', 'gp')",
    ),
    Case(
        "run-fix-searched-key",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--set", "max_norm=1"),
        "'max_norm' is searched",
    ),
    Case(
        "run-confirm-share-impossible",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--set", "confirm_fraction=1"),
        "confirm_fraction=1.0 is out of range; allowed [0.0, 1.0)",
    ),
    Case(
        "run-confirm-share-leaves-too-few",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--set", "confirm_fraction=0.95"),
        "confirm_fraction=0.95: the training side has",
    ),
    Case(
        "run-set-typo",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--set", "epoch=1"),
        "unknown key 'epoch'; did you mean 'epochs'",
    ),
    Case(
        "run-zero-trials",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--trials", "0"),
        "--trials=0: must be at least 1",
    ),
    Case(
        "run-bad-device",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--device", "gpu"),
        "--device 'gpu': expected auto, cpu, cuda",
    ),
    Case(
        "run-weights-unavailable",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--set", "pretrained=openai"),
        "pretrained='openai' is neither a file",
    ),
    Case(
        "run-storage-is-dir",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "/"),
        "Is a directory",
    ),
    Case(
        "run-workers-sqlite",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--workers", "2", "--storage", "sqlite:///studies/x.db"),
        "SQLite is not safe",
    ),
    Case("export-no-database", "hpo", ("export",), "no study database at studies/handreid.db"),
    # -- --slurm: nothing is submitted and nothing written
    Case("run-slurm-zero", "hpo", (*SLURM, "0"), "--slurm=0: must be at least 1"),
    Case(
        "run-slurm-no-sbatch",
        "hpo",
        (*SLURM, "2"),
        "sbatch not found on PATH",
        env=(("PATH", "{tmp}/no-such-bin"),),
    ),
    Case(
        "run-slurm-sbatch-refuses",
        "hpo",
        (*SLURM, "2", "--slurm-opts", "-p nope"),
        "sbatch refused the job: invalid partition specified: nope; nothing was submitted",
        setup=executable("bin/sbatch", REFUSING_SBATCH),
        env=(("PATH", "{tmp}/bin"),),
    ),
    Case(
        "run-slurm-no-gpu-nodes",
        "hpo",
        (*SLURM, "2"),
        f"{NO_NODE} (it passes without --gres=gpu:1: --slurm-gpus 0 for nodes without GPUs",
        setup=executable("bin/sbatch", sbatch_refusing("*--gres*")),
        env=(("PATH", "{tmp}/bin"),),
    ),
    Case(
        "run-slurm-too-much-memory",  # the same words as for GPUs: no hint about GPUs
        "hpo",
        (*SLURM, "2", "--slurm-opts=--mem=100T"),
        f"sbatch refused the job: {NO_NODE}; nothing was submitted",
        setup=executable("bin/sbatch", sbatch_refusing("*--mem=100T*")),
        env=(("PATH", "{tmp}/bin"),),
    ),
    Case(
        "run-slurm-gres-refused-with-slurm-gpus-0",
        "hpo",
        (*SLURM, "2", "--slurm-gpus", "0", "--slurm-opts=--gres=gpu:2"),
        "sbatch refused the job: Invalid generic resource (gres) specification; nothing was",
        setup=executable(
            "bin/sbatch",
            sbatch_refusing("*--gres*", "Invalid generic resource (gres) specification"),
        ),
        env=(("PATH", "{tmp}/bin"),),
    ),
    Case(
        "run-slurm-time-shorter-than-warning",  # refused before sbatch is asked
        "hpo",
        (*SLURM, "2", "--slurm-opts=-p gpu --time=1"),
        "--time=1 is a time limit of 60 s, but Slurm warns each task 120 s before it (hpo's "
        "default --signal=B:USR1@120), so every task would stop as it starts; give a longer "
        "--time (a bare number is minutes; --time=1:00:00 is an hour) or a shorter warning, "
        "e.g. --signal=B:USR1@30 in --slurm-opts",
        env=(("PATH", "{tmp}/no-such-bin"),),
    ),
    Case(
        "run-slurm-signal-longer-than-time",
        "hpo",
        (*SLURM, "2", "--slurm-dry-run", "--slurm-opts=--signal=B:USR1@600 -t 0:10:00"),
        "--time=0:10:00 is a time limit of 600 s, but Slurm warns each task 600 s before it "
        "(--signal=B:USR1@600 in --slurm-opts)",
    ),
    Case(
        "run-slurm-sqlite",
        "hpo",
        (*SLURM, "2", "--storage", "sqlite:///studies/x.db"),
        "an SQLite database cannot be shared by tasks on several nodes; use a journal file on a "
        "shared filesystem: hpo run",
    ),
    Case("run-slurm-gpus", "hpo", (*SLURM, "2", "--gpus", "0"), "Slurm gives each task its GPU"),
    Case("run-slurm-workers", "hpo", (*SLURM, "2", "--workers", "2"), "each Slurm task is one"),
    Case(
        "run-slurm-opts-unbalanced", "hpo", (*SLURM, "2", "--slurm-opts", "-p 'a"), "--slurm-opts"
    ),
    Case("run-wait-without-slurm", "hpo", (*RUN, "--wait"), "--wait goes with --slurm N"),
    Case("confirm-slurm-zero", "hpo", (*CONFIRM, "--slurm", "0"), "--slurm=0: must be at least"),
    Case(
        "confirm-slurm-sqlite",
        "hpo",
        (*CONFIRM, "--slurm", "2", "--storage", "sqlite:///studies/handreid.db"),
        "journal file on a shared filesystem: --storage studies/handreid-tiny-vit/journal.log",
    ),
    Case(
        "confirm-slurm-no-study",
        "hpo",
        ("confirm", "--slurm", "2"),
        "--slurm: name the study with --study",
    ),
    Case(
        "confirm-slurm-time-shorter-than-warning",
        "hpo",
        (*CONFIRM, "--slurm", "2", "--slurm-opts", "-t 1:30"),
        "--time=1:30 is a time limit of 90 s, but Slurm warns each task 120 s before it",
        env=(("PATH", "{tmp}/no-such-bin"),),
    ),
    # -- confirm
    Case("confirm-no-database", "hpo", CONFIRM, "no study database at studies/handreid.db"),
    Case("confirm-top-zero", "hpo", (*CONFIRM, "--top", "0"), "--top=0: must be at least 1"),
    Case("confirm-one-seed", "hpo", (*CONFIRM, "--seeds", "1"), "--seeds=1: at least 2 are needed"),
    Case("confirm-many-seeds", "hpo", (*CONFIRM, "--seeds", "1000"), "--seeds=1000: at most 100"),
    Case("confirm-workers-zero", "hpo", (*CONFIRM, "--workers", "0"), "--workers=0: must be at"),
    Case(
        "confirm-unknown-study",
        "hpo",
        ("confirm", "--study", "nope"),
        "no study named 'nope'",
        setup=study_with_space(),
    ),
    Case(
        "confirm-design-too-small",
        "hpo",
        (*CONFIRM, "--top", "2", "--seeds", "2"),
        "this confirm would decide with 1 df, (2 configs - 1) x (2 runs each - 1); an interval "
        "needs at least 4 to decide: --seeds 5 gives enough",
        setup=study_with_space(trials=("complete", "complete")),
    ),
    Case(
        "confirm-nothing-complete",
        "hpo",
        CONFIRM,
        "has no completed trial yet; nothing to confirm",
        setup=study_with_space(trials=("fail",)),
    ),
    Case(
        "confirm-no-space",
        "hpo",
        CONFIRM,
        "stored no search space; it cannot be confirmed",
        setup=study_in(),
    ),
    # -- final
    Case("final-no-database", "hpo", FINAL, "no study database at studies/handreid.db"),
    Case("final-one-seed", "hpo", (*FINAL, "--seeds", "1"), "--seeds=1: must be 2 to 100"),
    Case("final-workers-zero", "hpo", (*FINAL, "--workers", "0"), "--workers=0: must be at"),
    Case(
        "final-without-confirm",
        "hpo",
        FINAL,
        "has no confirmed winner; run `hpo confirm --study handreid-tiny-vit` first",
        setup=study_with_space(),
    ),
    Case(
        "final-unknown-aspect",
        "hpo",
        (*FINAL, "--aspects", "dorsal right,dorsal middle"),
        "--aspects: unknown aspect 'dorsal middle'; choose from dorsal right, dorsal left, "
        "palmar right, palmar left, 'each' or 'study'",
        setup=confirmed_study,
    ),
    Case(
        "final-config-other-backbone",
        "hpo",
        (*FINAL, "--config", "rn.yaml"),
        "--config rn.yaml: model 'tiny-rn', but the study tuned 'tiny-vit'; a final table "
        "compares configs of one backbone",
        setup=chain(confirmed_study, config_with("model: tiny-rn", "rn.yaml")),
    ),
    Case(
        "final-confirm-partial",
        "hpo",
        FINAL,
        "its confirm is partial; `hpo confirm --study handreid-tiny-vit --top 5 --seeds 3` "
        "finishes it before the final table",
        setup=confirmed_with(complete=False),
    ),
    Case(
        "final-confirm-without-baseline",
        "hpo",
        FINAL,
        "its confirm has no baseline to compare with; the search space needs a baseline",
        setup=confirmed_with(reference_baseline=None),
    ),
    Case(
        "final-aspects-on-hd",
        "hpo",
        (*FINAL, "--aspects", "each,dorsal right"),
        "--aspects 'each,dorsal right': the study's data is the 'hd' layout, which has no "
        "aspects; use --aspects study",
        setup=confirmed_on_hd,
    ),
    Case(
        "final-config-typo",
        "hpo",
        (*FINAL, "--config", "tiny.yaml"),
        "lr_modlues",
        setup=chain(confirmed_study, config_text("lr_modlues: 0.001\n")),
    ),
    Case(
        "final-config-missing",
        "hpo",
        (*FINAL, "--config", "nope.yaml"),
        "--config nope.yaml: no such file",
        setup=confirmed_study,
    ),
    # -- run: study names, options, storages (all refused before any data is read)
    Case("run-study-parent", "hpo", (*RUN, "--study", "../../evil"), "no '/' or '\\'"),
    Case("run-study-absolute", "hpo", (*RUN, "--study", "/srv/x"), "no '/' or '\\'"),
    Case("run-study-backslash", "hpo", (*RUN, "--study", "a\\b"), "no '/' or '\\'"),
    Case("run-study-dotdot", "hpo", (*RUN, "--study", ".."), "no '..'"),
    Case("run-study-too-long", "hpo", (*RUN, "--study", LONG), "300 characters; at most 100"),
    Case("run-study-newline", "hpo", (*RUN, "--study", "a\nb"), "control character '\\n'"),
    Case("run-study-empty", "hpo", (*RUN, "--study", ""), "the study name is empty"),
    Case(
        "run-timeout-negative", "hpo", (*RUN, "--timeout", "-1"), "--timeout=-1: must be a positive"
    ),
    Case("run-timeout-zero", "hpo", (*RUN, "--timeout", "0"), "--timeout=0: must be a positive"),
    Case("run-timeout-nan", "hpo", (*RUN, "--timeout", "nan"), "--timeout=nan: must be a positive"),
    Case("run-heartbeat-negative", "hpo", (*RUN, "--heartbeat", "-5"), "--heartbeat=-5: must be"),
    Case(
        "run-keep-checkpoints-negative",
        "hpo",
        (*RUN, "--keep-checkpoints", "-1"),
        "argument --keep-checkpoints: must be 0 or more, not -1",
    ),
    Case(
        "run-keep-checkpoints-not-a-number",
        "hpo",
        (*RUN, "--keep-checkpoints", "two"),
        "argument --keep-checkpoints: expected a whole number, not 'two'",
    ),
    Case("run-seed-negative", "hpo", (*RUN, "--seed", "-1"), "--seed=-1: must be between 0"),
    Case("run-seed-huge", "hpo", (*RUN, "--seed", str(2**64)), "must be between 0 and 4294967295"),
    Case("run-workers-zero", "hpo", (*RUN, "--workers", "0"), "--workers=0: must be at least 1"),
    Case(
        "run-gpus-without-cuda",
        "hpo",
        (*RUN, "--workers", "2", "--gpus", "0"),
        "--gpus=0: no CUDA device is visible here",
    ),
    Case("run-gpus-one-worker", "hpo", (*RUN, "--gpus", "0"), "needs --workers 2 or more"),
    Case("run-gpus-not-numbers", "hpo", (*RUN, "--workers", "2", "--gpus", "a"), "expected device"),
    Case("run-storage-in-memory", "hpo", (*RUN, "--storage", "sqlite://"), "in-memory database"),
    Case("run-storage-memory-file", "hpo", (*RUN, "--storage", "sqlite:///:memory:"), "in-memory"),
    Case(
        "run-journal-is-text",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "{tmp}/notes.txt"),
        "is not an Optuna journal file",
        setup=write("notes.txt", "my notes\nabout the study\n"),
    ),
    Case(
        "run-journal-torn",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "{tmp}/s.log"),
        "ends in a torn record (27 bytes after the last complete line",
        setup=torn("s.log"),
    ),
    Case(
        "run-journal-is-sqlite",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "{tmp}/s.db"),
        "is an SQLite database; pass --storage sqlite:///",
        setup=study_in("s.db"),
    ),
    Case(
        "run-study-in-the-journal",
        "hpo",
        (*RUN, "--data", "{synthetic}"),
        "is in studies/handreid.log, not in sqlite:///studies/handreid.db; resume it there: "
        "hpo run --backbone tiny-vit --quiet --data",
        setup=study_in("studies/handreid.log"),
    ),
    Case(
        "run-workers-on-an-sqlite-study",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--workers", "2"),
        "which is not safe for several workers; resume it with one worker: hpo run "
        "--backbone tiny-vit --quiet --data",
        setup=study_in("studies/handreid.db"),
    ),
    Case(
        "run-other-search-space",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "sqlite:///{tmp}/s.db"),
        "was created with a different search space",
        setup=study_in("s.db", attrs={"space_digest": "0123"}),
    ),
    Case("run-no-data", "hpo", RUN, "no data: pass --data DIR"),
    Case(
        "run-unknown-pruner",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--pruner", "x"),
        "argument --pruner: invalid choice: 'x' (choose from 'median', 'hyperband', 'runs', 'none')",
    ),
    Case("run-epochs-zero", "hpo", (*RUN, "--data", "{synthetic}", "--epochs", "0"), "epochs=0"),
    Case(
        "run-unknown-aspect",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--aspects", "bogus"),
        "unknown aspect 'bogus'",
    ),
    Case("run-space-missing", "hpo", (*RUN, "--space", "{tmp}/no.yaml"), "space file not found"),
    Case(
        "run-space-not-yaml",
        "hpo",
        (*RUN, "--space", "{tmp}/s.yaml"),
        "not valid YAML",
        setup=write("s.yaml", "base: [\n"),
    ),
    # -- argparse's own errors: one line too
    Case("run-trials-not-int", "hpo", (*RUN, "--trials", "many"), "invalid int value: 'many'"),
    Case(
        "run-unknown-option", "hpo", (*RUN, "--bogus"), "hpo run: unrecognized arguments: --bogus"
    ),
    Case("run-no-backbone", "hpo", ("run",), "the following arguments are required: --backbone"),
    Case(
        "run-bad-dataset", "hpo", (*RUN, "--dataset", "xyz"), "argument --dataset: invalid choice"
    ),
    Case("no-command", "hpo", (), "no command given: name one of the commands above"),
    Case("unknown-command", "hpo", ("frobnicate",), "invalid choice: 'frobnicate'"),
    # -- export
    Case(
        "export-no-study-named",
        "hpo",
        ("export", "--study", "nope"),
        "no study named 'nope' in sqlite:///studies/handreid.db",
        setup=study_in(),
    ),
    Case(
        "export-two-studies",
        "hpo",
        ("export",),
        "holds 2 studies",
        setup=both(study_in(name="a"), study_in(name="b")),
    ),
    Case(
        "export-no-trial",
        "hpo",
        ("export",),
        "has no completed trial yet",
        setup=study_in(trials=()),
    ),
    Case(
        "export-trial-missing",
        "hpo",
        ("export", "--trial", "7"),
        "has no trial 7",
        setup=study_in(),
    ),
    Case(
        "export-trial-failed",
        "hpo",
        ("export", "--trial", "1"),
        "trial 1 is FAIL; only a COMPLETE trial can be exported",
        setup=study_in(trials=("complete", "fail")),
    ),
    Case(
        "export-config-differs",
        "hpo",
        ("export",),
        "its recorded config differs from base + params",
        setup=lambda tmp, syn: study_in(attrs={"space": tiny_space(tmp, syn)})(tmp, syn),
    ),
    Case(
        "export-out-folder",
        "hpo",
        ("export", "--out", "{tmp}"),
        "is a directory; give the path of a file",
        setup=study_in(),
    ),
    Case(
        "export-out-device",
        "hpo",
        ("export", "--out", "/dev/null"),
        "--out /dev/null is a device",
        setup=study_in(),
    ),
    Case(
        "export-out-fifo",
        "hpo",
        ("export", "--out", "{tmp}/../fifo"),
        "is a FIFO",
        setup=both(study_in(), fifo_beside),
    ),
    Case(
        "export-out-link-to-folder",
        "hpo",
        ("export", "--out", "{tmp}/link"),
        "is a directory",
        setup=both(study_in(), link_to_folder),
    ),
    Case(
        "export-out-under-a-file",
        "hpo",
        ("export", "--out", "{tmp}/notes.txt/best.yaml"),
        "Not a directory",
        setup=both(study_in(), write("notes.txt", "x")),
    ),
    Case(
        "export-out-unwritable",
        "hpo",
        ("export", "--out", "/proc/best.yaml"),
        "--out /proc/best.yaml: cannot write",
        setup=study_in(),
    ),
    Case(
        "export-study-in-the-journal",
        "hpo",
        ("export", "--study", "j"),
        "study 'j' is not in sqlite:///studies/handreid.db but in studies/handreid.log",
        setup=study_in("studies/handreid.log", name="j"),
    ),
    Case("export-journal-missing", "hpo", ("export", "--storage", "none.log"), "not found"),
    Case("export-in-memory", "hpo", ("export", "--storage", "sqlite://"), "in-memory"),
    Case("export-trial-not-int", "hpo", ("export", "--trial", "best"), "invalid int value"),
    # -- show, ls
    Case("show-no-database", "hpo", ("show",), "no study database at studies/handreid.db"),
    Case(
        "show-no-study-named",
        "hpo",
        ("show", "--study", "x"),
        "no study named 'x'",
        setup=study_in(),
    ),
    Case(
        "show-journal-torn",
        "hpo",
        ("show", "--storage", "{tmp}/s.log"),
        "ends in a torn record",
        setup=torn("s.log"),
    ),
    Case(
        "show-journal-is-text",
        "hpo",
        ("show", "--storage", "{tmp}/notes.txt"),
        "is not an Optuna journal file",
        setup=write("notes.txt", "hello\n"),
    ),
    Case(
        "show-trial-missing",
        "hpo",
        ("show", "--trial", "7"),
        "study 'handreid-tiny-vit' has no trial 7 (trials 0..0)",
        setup=study_in(),
    ),
    Case(
        "show-trial-in-empty-study",
        "hpo",
        ("show", "--trial", "0", "--json"),
        "has no trial 0 (no trials yet)",
        setup=study_in(trials=()),
    ),
    Case("show-trial-not-int", "hpo", ("show", "--trial", "best"), "invalid int value: 'best'"),
    Case(
        "show-trial-history-not-json",
        "hpo",
        ("show", "--trial", "0"),
        "trial 0: history.json in the artifact store is not valid JSON",
        setup=broken_history("{not json"),
    ),
    Case(
        "show-trial-history-without-epochs",
        "hpo",
        ("show", "--trial", "0", "--json"),
        "trial 0: history.json has no list of epochs",
        setup=broken_history('{"epochs": 3}'),
    ),
    Case("show-top-zero", "hpo", ("show", "--top", "0"), "--top=0: must be at least 1"),
    Case("show-json-no-database", "hpo", ("show", "--json"), "no study database"),
    Case("trials-no-database", "hpo", ("trials",), "no study database at studies/handreid.db"),
    Case(
        "trials-unknown-state",
        "hpo",
        ("trials", "--state", "done"),
        "argument --state: invalid choice: 'done' (choose from 'complete', 'pruned', 'fail', "
        "'running', 'waiting')",
    ),
    Case("trials-state-empty", "hpo", ("trials", "--state"), "argument --state: expected at least"),
    Case(
        "trials-no-study-named",
        "hpo",
        ("trials", "--json", "--study", "x"),
        "no study named 'x'",
        setup=study_in(),
    ),
    Case(
        "trials-two-studies",
        "hpo",
        ("trials",),
        "holds 2 studies",
        setup=both(study_in(name="a"), study_in(name="b")),
    ),
    Case(
        "confirm-unknown-option",
        "hpo",
        ("confirm", "--trials", "3"),
        "hpo confirm: unrecognized arguments: --trials 3",
    ),
    Case("ls-no-database", "hpo", ("ls",), "no study database at studies/handreid.db"),
    Case("ls-journal-missing", "hpo", ("ls", "--storage", "{tmp}/none.log"), "not found"),
    Case("ls-in-memory", "hpo", ("ls", "--storage", "sqlite:///:memory:"), "in-memory"),
    Case("ls-unknown-option", "hpo", ("ls", "--study", "x"), "hpo ls: unrecognized arguments"),
    # -- report, dashboard
    Case("report-top-zero", "hpo", ("report", "--top", "0"), "--top=0: must be at least 1"),
    Case("report-no-database", "hpo", ("report",), "no study database at studies/handreid.db"),
    Case(
        "report-nothing-finished",
        "hpo",
        ("report",),
        "has no finished trials yet; nothing to report",
        setup=study_in(trials=("fail",)),
    ),
    Case(
        "report-out-under-a-file",
        "hpo",
        ("report", "--out", "{tmp}/notes.txt/report", "--no-png"),
        "cannot create report folder",
        setup=both(study_in(), write("notes.txt", "x")),
    ),
    Case("dashboard-port-range", "hpo", ("dashboard", "--port", "70000"), "must be between 0"),
    Case("dashboard-port-not-int", "hpo", ("dashboard", "--port", "http"), "invalid int value"),
    Case("dashboard-no-database", "hpo", ("dashboard",), "no study database"),
]


# ---- nothing lost: damaged journals, copied stamps, exports that would clobber ---------------
def garbage_line(where: str, at: int | None = None) -> Setup:
    """A journal with a garbage line that ends in a newline: its last line (Optuna skips such a
    last line when reading, and would append after it), or line ``at`` (from 1)."""

    def setup(tmp: Path, synthetic: Path) -> None:
        study_in(where)(tmp, synthetic)
        lines = (tmp / where).read_bytes().splitlines(keepends=True)
        lines.insert(len(lines) if at is None else at - 1, b"garbage line\n")
        (tmp / where).write_bytes(b"".join(lines))

    return setup


def real_set_with_a_copied_stamp(tmp: Path, synthetic: Path) -> None:
    """Real-looking images named as synth names its own, and a stamp copied from a synth set."""
    from handreid.data.synthetic import STAMP, write_synthetic

    other = write_synthetic(tmp.parent / "other-synth", ids=2, per_id=2, size=16)
    (tmp / "data" / "Hands").mkdir(parents=True)
    for image in (other / "Hands").iterdir():
        (tmp / "data" / "Hands" / image.name).write_bytes(b"a real photo")
    (tmp / "data" / "HandInfo.csv").write_text("the real catalogue\n")
    (tmp / "data" / STAMP).write_bytes((other / STAMP).read_bytes())


def dangling_link(name: str) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        (tmp / name).symlink_to(tmp.parent / "nowhere" / "dir" / "best.yaml")

    return setup


def edited_checkpoint_id(tmp: Path, synthetic: Path) -> None:
    """A complete trial whose checkpoint entry was edited to point outside the store."""
    import json

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (tmp / "studies" / "artifacts").mkdir(parents=True)
    (tmp / "cfg.yaml").write_text("not an artifact")
    study = optuna.create_study(
        study_name="s", storage=f"sqlite:///{tmp}/studies/handreid.db", direction="maximize"
    )
    trial = study.ask()
    trial.set_user_attr("config", TrainConfig(**TINY, data_root=str(synthetic)).to_dict())
    meta = {"artifact_id": "../../cfg.yaml", "filename": "checkpoint.pt", "mimetype": "x"}
    study._storage.set_trial_system_attr(
        trial._trial_id, "artifacts:../../cfg.yaml", json.dumps({**meta, "encoding": None})
    )
    study.tell(trial, 0.5)


def study_with_checkpoint(tmp: Path, synthetic: Path) -> None:
    """A complete trial whose model is a checkpoint artifact in the study's store, and a file
    of the user's where ``hpo export --out outs/existing.yaml --checkpoint`` puts the model."""
    import optuna
    from optuna.artifacts import upload_artifact

    from hpo.records.artifacts import open_artifact_store

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (tmp / "studies" / "artifacts").mkdir(parents=True)
    study = optuna.create_study(
        study_name="s", storage=f"sqlite:///{tmp}/studies/handreid.db", direction="maximize"
    )
    trial = study.ask()
    trial.set_user_attr("config", TrainConfig(**TINY, data_root=str(synthetic)).to_dict())
    model = tmp / "checkpoint.pt"  # artifacts keep the uploaded file's name
    model.write_bytes(b"the trial's model")
    store = open_artifact_store(tmp / "studies" / "artifacts")
    upload_artifact(artifact_store=store, file_path=str(model), study_or_trial=trial)
    model.unlink()
    study.tell(trial, 0.5)
    (tmp / "outs").mkdir()
    (tmp / "outs" / "existing.pt").write_text("precious model")


def folder(name: str) -> Setup:
    def setup(tmp: Path, synthetic: Path) -> None:
        (tmp / name).mkdir(parents=True)

    return setup


def space_with_a_baseline_missing_max_norm(tmp: Path, synthetic: Path) -> None:
    space = tiny_space(tmp, synthetic)
    assert "max_norm" in space["space"] and "max_norm" in space["baselines"][0]
    del space["baselines"][0]["max_norm"]
    (tmp / "sp.yaml").write_text(yaml.safe_dump(space, sort_keys=False))


def space_with_twin_baselines(tmp: Path, synthetic: Path) -> None:
    space = tiny_space(tmp, synthetic)
    twin = dict(space["baselines"][0], name="again")
    space["baselines"] = [space["baselines"][0], twin]
    (tmp / "twins.yaml").write_text(yaml.safe_dump(space, sort_keys=False))


def empty_journal(tmp: Path, synthetic: Path) -> None:
    (tmp / "empty.log").write_bytes(b"")


NOTHING_LOST_CASES = [
    Case(
        "train-out-dangling-link",
        "handreid",
        ("train", "--config", "{tmp}/tiny.yaml", "--out", "{tmp}/out", "--quiet"),
        "is a link to",
        setup=both(config_with(""), dangling_link("out")),
    ),
    Case(
        "confirm-workers-on-sqlite",
        "hpo",
        (*CONFIRM, "--workers", "2"),
        "SQLite is not safe for several workers; use a journal file",
        setup=study_with_space(),
    ),
    Case(
        "run-storage-dev-null",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "/dev/null"),
        "cannot open journal file /dev/null: it is a device or a pipe, not a file",
    ),
    Case(
        "run-space-is-a-folder",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--space", "{tmp}"),
        "is a directory, not a file; give a search-space YAML file",
    ),
    Case(
        "run-space-dev-null",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--space", "/dev/null"),
        "--space /dev/null is a device or a pipe, not a file",
    ),
    Case(
        "run-epochs-and-set-epochs",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--epochs", "1", "--set", "epochs=3"),
        "--epochs 1 and --set epochs=3 both set epochs; give only one",
    ),
    Case(
        "run-aspects-and-set-aspects",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--aspects", "all", "--set", "aspects=all"),
        "--aspects all and --set aspects=all both set aspects; give only one",
    ),
    Case(
        "run-space-twin-baselines",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--space", "{tmp}/twins.yaml"),
        "baselines[1]: the same settings as baselines[0]",
        setup=space_with_twin_baselines,
    ),
    # a categorical's choices as {code: value}: each bad mapping is one clear error
    Case(
        "run-space-codes-empty",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--space", "{tmp}/sp.yaml"),
        "space.prompt_template: choices is an empty mapping; give at least one {code: value}",
        setup=write(
            "sp.yaml",
            "base: {model: tiny-vit, pretrained: none, image_size: [64, 64]}\n"
            "space:\n  prompt_template: {type: categorical, choices: {}}\n",
        ),
    ),
    Case(
        "run-space-code-not-a-string",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--space", "{tmp}/sp.yaml"),
        "space.prompt_template: choice code 1 is not a name; codes are short strings",
        setup=write(
            "sp.yaml",
            "base: {model: tiny-vit, pretrained: none, image_size: [64, 64]}\n"
            "space:\n  prompt_template:\n    type: categorical\n"
            "    choices: {1: 'A photo of a {} {aspect} hand.'}\n",
        ),
    ),
    Case(
        "run-space-codes-same-value",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--space", "{tmp}/sp.yaml"),
        "space.prompt_template: codes 'photo' and 'again' have the same value",
        setup=write(
            "sp.yaml",
            "base: {model: tiny-vit, pretrained: none, image_size: [64, 64]}\n"
            "space:\n  prompt_template:\n    type: categorical\n    choices:\n"
            "      photo: 'A photo of a {} {aspect} hand.'\n"
            "      again: 'A photo of a {} {aspect} hand.'\n",
        ),
    ),
    Case(
        "run-space-code-is-another-value",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--space", "{tmp}/sp.yaml"),
        "space.classifier: code 'linear' is also the value of code 'arc'",
        setup=write(
            "sp.yaml",
            "base: {model: tiny-vit, pretrained: none, image_size: [64, 64]}\n"
            "space:\n  classifier: {type: categorical, choices: {arc: linear, linear: arcface}}\n",
        ),
    ),
    Case(
        "show-empty-journal",
        "hpo",
        ("show", "--storage", "{tmp}/empty.log"),
        "no studies in",
        setup=empty_journal,
    ),
    Case(
        "run-studies-is-a-file",
        "hpo",
        (*RUN, "--data", "{synthetic}"),
        "studies is a file here, not a folder",
        setup=write("studies", "my notes"),
    ),
    Case(
        "run-journal-garbage-last-line",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "{tmp}/s.log"),
        "is not an Optuna journal record; nothing was written; the study replays without it: "
        "keep a copy and delete it, keeping all 5 records, with: cp",
        setup=garbage_line("s.log"),
    ),
    Case(
        "show-journal-garbage-last-line",
        "hpo",
        ("show", "--storage", "{tmp}/s.log"),
        "line 6 (bytes",
        setup=garbage_line("s.log"),
    ),
    Case(
        "show-journal-garbage-middle-line",
        "hpo",
        ("show", "--storage", "{tmp}/s.log"),
        "keeping all 5 records, with: cp",  # the records after the line are not cut off
        setup=garbage_line("s.log", at=3),
    ),
    Case(
        "run-journal-garbage-middle-line",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--storage", "{tmp}/s.log"),
        "s.log.bak && sed -e 3d ",
        setup=garbage_line("s.log", at=3),
    ),
    Case(
        "synth-force-over-a-copied-stamp",
        "handreid",
        (*SYNTH, "{tmp}/data", "--force"),
        "(changed since synth wrote it); --force replaces only what synth wrote",
        setup=real_set_with_a_copied_stamp,
    ),
    Case(
        "export-yaml-named-pt-with-checkpoint",
        "hpo",
        ("export", "--out", "{tmp}/best.pt", "--checkpoint"),
        "the YAML's name with .pt, and would replace the YAML",
        setup=study_in(),
    ),
    Case(
        "export-through-a-dangling-link",
        "hpo",
        ("export", "--out", "{tmp}/out.yaml"),
        "whose folder",
        setup=both(study_in(), dangling_link("out.yaml")),
    ),
    Case(
        "export-checkpoint-onto-a-folder",
        "hpo",
        ("export", "--out", "{tmp}/best.yaml", "--checkpoint"),
        "best.pt is a directory; give the path of a file",
        setup=both(study_in(), folder("best.pt")),
    ),
    Case(
        "export-checkpoint-id-edited",
        "hpo",
        ("export", "--checkpoint", "--out", "{tmp}/best.yaml"),
        "'../../cfg.yaml' recorded in the storage is not an Optuna artifact id",
        setup=edited_checkpoint_id,
    ),
    Case(
        "export-checkpoint-over-a-file-not-named",
        "hpo",
        ("export", "--study", "s", "--out", "{tmp}/outs/existing.yaml", "--checkpoint"),
        "existing.pt exists and holds another file; hpo export --checkpoint writes the model "
        "there (the YAML's name with .pt) and replaces it only with --overwrite",
        setup=study_with_checkpoint,
    ),
    Case(
        "run-baseline-without-a-searched-key",
        "hpo",
        (*RUN, "--data", "{synthetic}", "--space", "{tmp}/sp.yaml"),
        "baselines[0]: sets no value for the searched key(s) max_norm; a baseline fixes every "
        "searched key",
        setup=space_with_a_baseline_missing_max_norm,
    ),
    Case(
        "confirm-bad-device",
        "hpo",
        (*CONFIRM, "--device", "tpu"),
        "--device 'tpu': expected auto, cpu, cuda or cuda:N",
    ),
    Case(
        "trials-table-and-long",
        "hpo",
        ("trials", "--table", "--long"),
        "argument --long: not allowed with argument --table",
    ),
    Case(
        "run-fifo-image",
        "hpo",
        (*RUN, "--data", "{tmp}/data"),
        "data/Hands/Hand_0000001.jpg is a FIFO (named pipe), not an image file",
        setup=synth_set(mutate=fifo_image),
    ),
]

CASES = HANDREID_CASES + HPO_CASES + NOTHING_LOST_CASES


def _snapshot(root: Path) -> dict[str, str]:
    """relative path -> content digest (or 'dir'/'link:<target>'/'fifo'/'special') of
    everything under root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = f"link:{os.readlink(path)}"
            elif path.is_dir():
                out[rel] = "dir"
            elif not path.is_file():  # reading a FIFO or a device would block the snapshot
                out[rel] = "fifo" if path.is_fifo() else "special"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _main(cli: str):
    if cli == "hpo":
        from hpo.cli import main
    else:
        from handreid.cli import main
    return main


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_writes_nothing(
    case, tmp_path, synthetic_root, monkeypatch, capfd
):
    if any("{sample}" in a for a in case.args) and not (SHARED_11K / "HandInfo.csv").is_file():
        pytest.skip(f"11k Hands sample not found at {SHARED_11K}")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("HANDREID_CACHE", str(tmp_path / "cache"))  # the decode cache may fill
    if case.setup:
        case.setup(work, synthetic_root)
    fill = {"tmp": str(work), "synthetic": str(synthetic_root), "sample": str(SHARED_11K)}
    for key, value in case.env:
        monkeypatch.setenv(key, value.format(**fill))
    argv = [a.format(**fill) for a in case.args]
    before, data_before = _snapshot(work), _snapshot(synthetic_root)
    with pytest.raises(SystemExit) as exc:
        _main(case.cli)(argv)
    out, err = capfd.readouterr()
    assert exc.value.code == case.code, (out, err)
    assert "Traceback" not in out + err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert case.message in lines[0], err
    assert _snapshot(work) == before, "the command wrote into its working folder"
    assert _snapshot(synthetic_root) == data_before, "the command wrote into the dataset"
