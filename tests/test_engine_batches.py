"""fit()'s per-batch hook: what a progress display needs to move during an epoch."""

from __future__ import annotations

from handreid.engine import fit, prepare_data


def test_on_batch_sees_every_training_batch_in_order(tiny_cfg):
    data = prepare_data(tiny_cfg)
    calls: list[tuple[int, int, int]] = []
    epochs: list[int] = []
    result = fit(
        tiny_cfg.replace(epochs=2, early_stop_patience=0),
        data=data,
        device="cpu",
        callbacks=[lambda epoch, metrics: epochs.append(len(calls))],
        on_batch=lambda epoch, batch, batches: calls.append((epoch, batch, batches)),
    )
    assert result.epochs_run == 2
    batches = calls[0][2]
    assert batches >= 1
    assert calls == [(e, b, batches) for e in range(2) for b in range(1, batches + 1)]
    assert epochs == [batches, 2 * batches], "each epoch's batches come before its callbacks"
