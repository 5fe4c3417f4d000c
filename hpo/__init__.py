"""Optuna studies over the handreid trainer: search spaces, objective, pruning, export."""

from __future__ import annotations
