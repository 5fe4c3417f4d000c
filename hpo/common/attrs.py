"""A trial's attributes wherever they are kept, and which of them are bookkeeping.

What a trial records for our own use (who ran it, digests, timings, per-run values) and the
metrics that ``hpo`` shows in its own views (best epoch, Rank-1/5/10: ``hpo show``, the
report, the note) are kept as trial system attributes under ``hpo:``, where every worker
reads them and neither ``optuna trials`` nor optuna-dashboard's trial page prints them: as
user attributes, 18 of them made each row of ``optuna trials`` about 1,000 characters wide,
and the Rank-k values at full precision kept it over 400. What a researcher needs next to
the value in Optuna's own views stays a user attribute: baseline, value_se, error and the
pruning reason (and a confirm run's candidate, seed and role).
``hpo.records.optuna_internals.set_attr`` writes them; ``attrs_of`` reads both places (a trial
recorded before the move has everything as user attributes).
"""

from __future__ import annotations

from typing import Any

RECORD_PREFIX = "hpo:"  # our study and trial records, see hpo.records.optuna_internals

BOOKKEEPING = frozenset(
    {
        "worker",
        "worker_process",
        "sampler_seed",
        "slurm_job",
        "slurm_task",
        "config_sha256",
        "split_digest",
        "progress",
        "status",
        "seconds",
        "peak_memory_mb",
        "epochs_run",
        "best_epochs",
        "fold_values",
        "n_folds",
        "n_repeats",
        "value_sd",
        "mAP",
        "best_epoch",
        "rank1",
        "rank5",
        "rank10",
        "pruned_at",  # prune_reason, a user attribute, says where too
        "final_test",  # a final run's per-split test metrics (hpo.decide.final)
        "final_checkpoint",
        "final_data",
    }
)
# How a queued confirm run is to be trained, kept out of sight like the bookkeeping but, unlike
# it, kept by the retry of a run whose worker died (``hpo.records.storage``): the retry must
# train the same run.
PLAN = frozenset(
    {
        "seed_offset",
        "train_epochs",
        "on_confirm_ids",
        "role",
        # a queued final run (hpo.decide.final): which config, aspect and seed it trains
        "final_key",
        "final_label",
        "final_role",
        "final_aspect",
        "final_seed",
        "final_config",
    }
)
RECORDED = BOOKKEEPING | PLAN  # every attribute kept as a system attribute ``hpo:<key>``


def attrs_of(trial: Any) -> dict[str, Any]:
    """The trial's user attributes and its bookkeeping, as one mapping (a FrozenTrial, or a
    running ``optuna.Trial``, which shows no system attributes and is read from its storage)."""
    system = getattr(trial, "system_attrs", None)
    if system is None:
        storage = getattr(trial, "storage", None)
        system = storage.get_trial(trial._trial_id).system_attrs if storage is not None else {}
    moved = {key: system[RECORD_PREFIX + key] for key in RECORDED if RECORD_PREFIX + key in system}
    return {**trial.user_attrs, **moved} if moved else trial.user_attrs
