from __future__ import annotations

import math

import pytest
import torch

from handreid import engine
from handreid.engine import StopTraining, fit, lr_factor, prepare_data


@pytest.fixture(scope="module")
def data(tiny_cfg):
    return prepare_data(tiny_cfg)


def learned_image_tower(result) -> dict[str, torch.Tensor]:
    """The image tower's weights after training.

    The tower is built first from the seed, so its initial weights are the same whatever the
    other keys say; after training they differ only if a key changed the gradients. Loss values
    would not do: some keys (arcface_scale, supcon_temperature) change the reported loss
    directly, even when they do nothing to what is learned.
    """
    return {
        name: p.detach().clone()
        for name, p in result.model.image.named_parameters()
        if p.requires_grad
    }


@pytest.fixture(scope="module")
def one_epoch_reference(tiny_cfg, data):
    return learned_image_tower(fit(tiny_cfg.replace(epochs=1), data=data, device="cpu"))


def chance_map(evalset) -> float:
    """Expected AP of a random ranking with one true gallery match among G: H_G / G."""
    g = len(evalset.splits[0][1])
    return sum(1 / r for r in range(1, g + 1)) / g


def test_tiny_vit_learns_far_above_chance(tiny_cfg, data):
    cfg = tiny_cfg.replace(epochs=6)
    result = fit(cfg, data=data, device="cpu")
    chance = chance_map(data.val)
    # 7 validation identities: chance mAP is 0.37; the trained model reaches ~0.7.
    assert result.best_map > chance + 0.25, (result.best_map, chance)
    assert result.status == "completed" and result.epochs_run == 6
    assert [h["epoch"] for h in result.history] == list(range(6))
    first, last = result.history[0], result.history[-1]
    assert last["id"] < first["id"], "the identity loss goes down"
    for key in (
        "loss",
        "id",
        "tri",
        "supcon",
        "supcon_w",
        "lr_clip_visual",
        "lr_modules",
        "grad_norm",
        "mAP",
        "rank1",
    ):
        assert key in last


def test_same_seed_repeats_exactly(tiny_cfg, data):
    a = fit(tiny_cfg, data=data, device="cpu")
    b = fit(tiny_cfg, data=data, device="cpu")
    assert [h["mAP"] for h in a.history] == [h["mAP"] for h in b.history]
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    c = fit(tiny_cfg.replace(seed=1), data=data, device="cpu")
    assert [h["loss"] for h in c.history] != [h["loss"] for h in a.history]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (
            "prompt_template",
            "A captured frame showing a person's {aspect} hand during surveillance.",
        ),
        ("max_norm", 0.05),
        ("arcface_scale", 24.0),
        ("arcface_margin", 0.35),
        ("supcon_temperature", 0.2),
        ("bnneck_dim", 32),
        ("lr_clip_visual", 1e-4),
        ("lr_modules", 1e-4),
    ],
)
def test_every_tunable_key_changes_what_the_model_learns(
    tiny_cfg, data, one_epoch_reference, key, value
):
    cfg = tiny_cfg.replace(epochs=1)
    base = one_epoch_reference
    assert base, "the image tower trains in this config"
    changed = learned_image_tower(fit(cfg.replace(**{key: value}), data=data, device="cpu"))
    assert changed.keys() == base.keys()
    # training is bit-for-bit repeatable on the CPU (test_same_seed_repeats_exactly), so any
    # difference comes from the key
    differ = [name for name in base if not torch.equal(base[name], changed[name])]
    assert differ, f"{key}={value!r} left every image-tower weight as the reference learned it"


def test_the_reference_is_reproducible(tiny_cfg, data, one_epoch_reference):
    """Without this, a nondeterministic run would make every key look effective."""
    again = learned_image_tower(fit(tiny_cfg.replace(epochs=1), data=data, device="cpu"))
    assert all(torch.equal(again[name], one_epoch_reference[name]) for name in again)


def test_clipping_bounds_the_gradient_norm_before_each_step(tiny_cfg, data, monkeypatch):
    norms = []
    real = engine.build_optimizer

    def recording(model, cfg, device):
        opt = real(model, cfg, device)

        def before_step(optimizer, args, kwargs):
            grads = [
                p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None
            ]
            norms.append(
                float(
                    torch.linalg.vector_norm(
                        torch.stack([torch.linalg.vector_norm(g) for g in grads])
                    )
                )
            )

        opt.register_step_pre_hook(before_step)
        return opt

    monkeypatch.setattr(engine, "build_optimizer", recording)
    result = fit(tiny_cfg.replace(epochs=1, max_norm=0.5), data=data, device="cpu")
    assert norms and max(norms) <= 0.5 + 1e-4
    assert result.history[0]["grad_norm"] > 0.5, (
        "the pre-clip norm is reported and was above the bound"
    )


def test_lr_schedule_warmup_then_cosine():
    total, warm = 100, 10
    f = [lr_factor(s, total, warm, "cosine", 0.01) for s in range(total)]
    assert f[:warm] == pytest.approx([(s + 1) / warm for s in range(warm)])
    assert f[warm] == pytest.approx(1.0)
    assert f[-1] == pytest.approx(0.01)
    assert all(a >= b for a, b in zip(f[warm:], f[warm + 1 :], strict=False))
    mid = warm + (total - warm - 1) // 2
    assert f[mid] == pytest.approx(
        0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (mid - warm) / (total - warm - 1)))
    )
    const = [lr_factor(s, total, warm, "constant", 0.01) for s in range(total)]
    assert const[warm:] == [1.0] * (total - warm)


def test_fit_follows_the_schedule(tiny_cfg, data):
    cfg = tiny_cfg.replace(epochs=3, warmup_epochs=1, lr_modules=1e-3, min_lr_ratio=0.0)
    result = fit(cfg, data=data, device="cpu")
    lrs = [h["lr_modules"] for h in result.history]
    assert lrs[0] == pytest.approx(1e-3)  # end of warmup
    assert lrs[1] < lrs[0] and lrs[2] == pytest.approx(0.0, abs=1e-12)


def scripted_validation(monkeypatch, maps):
    calls = []

    def fake(model, evalset, cfg, device, per_identity=False):
        calls.append(evalset)
        m = maps[len(calls) - 1]
        return {"rank1": m, "rank5": m, "rank10": m, "mAP": m}

    monkeypatch.setattr(engine, "evaluate_set", fake)
    return calls


def test_early_stopping_stops_and_restores_the_best_state(tiny_cfg, data, monkeypatch):
    calls = scripted_validation(monkeypatch, [0.2, 0.6, 0.5, 0.4, 0.3, 0.9])
    snapshots = {}

    def snapshot(epoch, metrics):
        snapshots[epoch] = {k: v.clone() for k, v in result_model["m"].state_dict().items()}

    real_build = engine.build_model
    result_model = {}

    def build(*args, **kwargs):
        result_model["m"] = real_build(*args, **kwargs)
        return result_model["m"]

    monkeypatch.setattr(engine, "build_model", build)
    result = fit(
        tiny_cfg.replace(epochs=6, early_stop_patience=2),
        data=data,
        device="cpu",
        callbacks=[snapshot],
    )
    assert result.status == "early_stopped"
    assert result.epochs_run == 4 and result.best_epoch == 1 and result.best["mAP"] == 0.6
    final = result.model.state_dict()
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[3][k]) for k in final)
    assert all(c is data.val for c in calls), "only validation identities choose the epoch"


def test_callbacks_see_each_epoch_and_may_stop(tiny_cfg, data):
    seen = []

    def cb(epoch, metrics):
        seen.append((epoch, metrics["mAP"]))
        if epoch == 1:
            raise StopTraining

    result = fit(tiny_cfg.replace(epochs=5), data=data, device="cpu", callbacks=[cb])
    assert [e for e, _ in seen] == [0, 1]
    assert result.status == "stopped" and result.epochs_run == 2


def test_other_exceptions_from_callbacks_propagate(tiny_cfg, data):
    class Pruned(Exception):
        pass

    def cb(epoch, metrics):
        raise Pruned

    with pytest.raises(Pruned):
        fit(tiny_cfg, data=data, device="cpu", callbacks=[cb])


def test_non_finite_loss_stops_with_a_status(tiny_cfg, data, monkeypatch):
    real = engine.LossComputer

    class Exploding(real):
        def __call__(self, outputs, labels, epoch):
            total, terms = super().__call__(outputs, labels, epoch)
            total = total * float("nan") if epoch == 1 else total
            terms["loss"] = total.detach()
            return total, terms

    monkeypatch.setattr(engine, "LossComputer", Exploding)
    result = fit(tiny_cfg.replace(epochs=4), data=data, device="cpu")
    assert result.status == "diverged"
    assert result.epochs_run == 2 and result.best_epoch == 0
    assert math.isnan(result.history[-1]["loss"])


def test_test_identities_never_reach_training_or_validation(data):
    splits = data.splits
    train_ids = {r.identity for r in splits.train}
    val_ids = {r.identity for r in splits.val.records}
    test_ids = {r.identity for r in splits.test.records}
    assert (
        test_ids
        and not (test_ids & train_ids)
        and not (test_ids & val_ids)
        and not (train_ids & val_ids)
    )
    train_paths = {r.path for r in splits.train}
    assert not train_paths & {r.path for r in splits.test.records}
    assert len(data.train_images) == len(splits.train) == len(data.train_labels)
    assert data.num_classes == len(train_ids)
