"""Optuna studies over the handreid trainer: search spaces, objective, pruning, export."""

from __future__ import annotations

import warnings

import optuna

# ``group``/``constant_liar`` of TPE and heartbeats are marked experimental; they are used on purpose.
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
