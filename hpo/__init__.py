"""Optuna studies over the handreid trainer, in layers that import only downward:

    common    line widths and numbers, study folders and safe writes
    records   what a study stores: Optuna internals, storages, spaces, artifacts, histories,
              checkpoints, the companion study of confirm runs
    fleet     who runs which trial: progress, recovery of dead workers, local workers, Slurm
    search    the search: pruning, the objective, baselines, the resumable trial loop
    decide    what the numbers mean: confirm, verdict statistics, comparisons, floors
    views     one read model of a study, then every text, figure, report, dashboard and export
    commands  the ``hpo`` verbs (``hpo.cli`` assembles them)

docs/architecture.md draws the layers. The flat names of earlier versions (``hpo.history``,
``hpo.confirm``, ...) still import: each is the same module object as its new home.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# ``group``/``constant_liar`` of TPE and heartbeats are marked experimental; they are used on
# purpose. Matched by Optuna's two wordings, not by its ExperimentalWarning class: importing
# Optuna here would cost every ``hpo --help`` and every refusal a third of a second or more.
warnings.filterwarnings("ignore", r".+ is experimental \(supported from v", Warning)
warnings.filterwarnings("ignore", r"Argument ``\w+`` is an experimental feature", Warning)

LAYERS = {
    "common": ("lines", "paths"),
    "records": (
        "optuna_internals",
        "storage",
        "space",
        "artifacts",
        "history",
        "curves",
        "checkpoints",
    ),
    "fleet": ("progress", "recovery", "slurm", "workers"),
    "search": ("pruning", "objective", "baselines", "study"),
    "decide": ("compare", "verdict", "confirm", "floors"),
    "views": ("headline", "listing", "figures", "report", "confirm_report", "dashboard", "export"),
}
MOVED = {f"hpo.{m}": f"hpo.{layer}.{m}" for layer, mods in LAYERS.items() for m in mods}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``import hpo.history`` gives the module ``hpo.records.history`` itself, so old imports,
    ``monkeypatch`` paths and pickles keep working and see one module, not a copy."""

    def find_spec(self, fullname, path=None, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(MOVED[spec.name])
        _OWN_SPECS[module.__name__] = module.__spec__
        return module

    def exec_module(self, module):
        # the import system stamped the old name's spec on the module: give it its own back
        module.__spec__ = _OWN_SPECS[module.__name__]


_OWN_SPECS: dict = {}

if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
    sys.meta_path.append(_MovedFinder())
