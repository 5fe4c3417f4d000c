"""PromptSG-style hand re-identification: config, data, model, trainer, evaluation."""

from __future__ import annotations

__version__ = "0.1.0"
