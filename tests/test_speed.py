"""The speed work changes nothing but speed.

On the CPU: the training step reads nothing back to the host (a TorchFunctionMode records
every Python-level tensor call that would synchronise a GPU), one epoch of ``fit`` equals a
plain float32 loop written without any of the speed work, and the batched, half-precision
evaluation path ranks like a direct float32 computation. On CUDA (skipped elsewhere): at most
one host sync per epoch, data held on the GPU trains like data held on the host, and bf16
evaluation ranks like fp32. ``torch.compile`` is compared when HANDREID_TEST_COMPILE=1.
"""

from __future__ import annotations

import os

import pytest
import torch
from torch.overrides import TorchFunctionMode

from handreid import engine
from handreid.data import augment as aug
from handreid.data.augment import BatchAugment, normalize
from handreid.data.sampler import PKSampler
from handreid.engine import (
    epoch_indices,
    evaluate_set,
    extract_features,
    fit,
    lr_factor,
    prepare_data,
    seed_everything,
)
from handreid.evaluation import average_splits, cosine_similarity, evaluate_ranking
from handreid.losses import LossComputer
from handreid.models import build_model

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")

# Tensor calls that make the host wait for the device (values read back, data-dependent shapes).
# ``.to(device)`` cannot be judged here: on the CPU every device-relative move looks the same.
SYNC_CALLS = {
    "item",
    "tolist",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "cpu",
    "numpy",
    "nonzero",
    "masked_select",
    "unique",
    "bincount",
}


class SyncSpy(TorchFunctionMode):
    """Records the names of tensor calls that would synchronise a GPU with the host."""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name in SYNC_CALLS or _bool_index(name, args):
            self.syncs.append(name)
        return func(*args, **kwargs)


def _bool_index(name: str, args) -> bool:
    """x[mask] with a bool tensor: the result's size depends on the mask's values."""
    if name not in ("__getitem__", "__setitem__", "index_put_", "index_put") or len(args) < 2:
        return False
    index = args[1] if isinstance(args[1], tuple) else (args[1],)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)


@pytest.fixture(scope="module")
def data(tiny_cfg):
    return prepare_data(tiny_cfg)


# ---- no host sync in the step path ---------------------------------------------------------
def test_the_spy_sees_host_reads():
    t = torch.ones(3)
    with SyncSpy() as spy:
        if t.sum() > 0:
            float(t[0])
        t[t > 0] = 2.0
        t.max().item()
    assert spy.syncs == ["__bool__", "__float__", "__setitem__", "item"]


@pytest.mark.parametrize(("model", "classifier"), [("tiny-vit", "arcface"), ("tiny-rn", "linear")])
def test_training_step_reads_nothing_back_to_the_host(tiny_cfg, data, model, classifier):
    cfg = tiny_cfg.replace(model=model, classifier=classifier, batch_size=16)
    net = build_model(cfg, data.num_classes, data.aspects)
    params = [p for p in net.parameters() if p.requires_grad]
    loss_fn = LossComputer(cfg)
    sampler = PKSampler(data.train_labels.numpy(), cfg.num_identities_per_batch, cfg.num_instances)
    batches = epoch_indices(sampler, torch.device("cpu"))[:2]
    # CPU normalisation goes through numpy on purpose; its device path is tested below
    xs = [normalize(data.train_images.index_select(0, idx)) for idx in batches]
    with SyncSpy() as spy:
        for idx, x in zip(batches, xs, strict=True):
            labels = data.train_labels.index_select(0, idx)
            aspects = data.train_aspects.index_select(0, idx)
            out = net(x, aspects, labels)
            loss, terms = loss_fn({k: v.float() for k, v in out.items()}, labels, 0)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.max_norm)
    assert spy.syncs == []


def test_device_augmentation_reads_nothing_back_to_the_host(data):
    """The accelerator path of BatchAugment (gather + masked select), run here on the CPU."""
    images = data.train_images[:16]
    augment = BatchAugment(flip_prob=0.5, pad=10, random_erasing=1.0)
    gen = torch.Generator().manual_seed(0)
    with SyncSpy() as spy:
        params = augment.draw(images.shape, images.device, gen)
        x = aug._crop_gather(images, params, augment.pad)
        x = aug._erase_where(x, params, gen)
        out = aug._normalize_torch(x)
    assert spy.syncs == []
    assert out.shape == images.shape and out.dtype == torch.float32


def test_epoch_indices_are_the_sampler_batches(data):
    sampler = PKSampler(data.train_labels.numpy(), 4, 4, seed=3)
    sampler.set_epoch(2)
    batches = epoch_indices(sampler, torch.device("cpu"))
    expected = list(sampler)
    assert batches.shape == (len(sampler), 16) and batches.dtype == torch.int64
    assert all(torch.equal(b, e) for b, e in zip(batches, expected, strict=True))


# ---- same results as the plain way ---------------------------------------------------------
def plain_epoch(cfg, data) -> tuple[list[float], dict]:
    """One epoch written without the speed work: per-step indexing, one float() per loss,
    the default (non-fused) AdamW, and evaluation of all images at once in float32."""
    seed_everything(cfg.seed)
    model = build_model(cfg, data.num_classes, data.aspects)
    groups = [g for g in model.param_groups(cfg) if g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr_modules, weight_decay=cfg.weight_decay)
    sampler = PKSampler(
        data.train_labels.numpy(), cfg.num_identities_per_batch, cfg.num_instances, seed=cfg.seed
    )
    steps = len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(
            s, cfg.epochs * steps, cfg.warmup_epochs * steps, cfg.scheduler, cfg.min_lr_ratio
        ),
    )
    augment = BatchAugment(cfg.flip_prob, cfg.pad, cfg.random_erasing)
    gen = torch.Generator().manual_seed(cfg.seed)
    loss_fn = LossComputer(cfg)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    model.train()
    sampler.set_epoch(0)
    losses = []
    for idx in sampler:
        images = augment(data.train_images[idx], gen)
        labels = data.train_labels[idx]
        out = model(images, data.train_aspects[idx], labels)
        loss, _ = loss_fn({k: v.float() for k, v in out.items()}, labels, 0)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.max_norm)
        optimizer.step()
        scheduler.step()
        losses.append(float(loss.detach()))
    model.eval()
    with torch.no_grad():
        feats = model.extract(normalize(data.val.images), data.val.aspects)
    results = []
    for q, g in data.val.splits:
        q, g = torch.as_tensor(q), torch.as_tensor(g)
        sim = feats[q] @ feats[g].T
        results.append(evaluate_ranking(sim, data.val.ids[q], data.val.ids[g], ap=cfg.eval_ap))
    return losses, average_splits(results)


def test_one_epoch_of_fit_equals_the_plain_loop(tiny_cfg, data):
    cfg = tiny_cfg.replace(epochs=1, eval_batch_size=16)  # several evaluation batches
    losses, val = plain_epoch(cfg, data)
    got = fit(cfg, data=data, device="cpu").history[0]
    assert got["loss"] == pytest.approx(sum(losses) / len(losses), rel=1e-5)
    for key in ("rank1", "rank5", "mAP"):
        assert got[key] == pytest.approx(val[key], abs=1e-6), key


def test_batched_features_equal_one_float32_pass(tiny_cfg, data):
    cfg = tiny_cfg.replace(eval_batch_size=7)
    seed_everything(0)
    model = build_model(cfg, data.num_classes, data.aspects).eval()
    got = extract_features(model, data.val.images, data.val.aspects, cfg, torch.device("cpu"))
    with torch.no_grad():
        ref = model.extract(normalize(data.val.images), data.val.aspects)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert torch.allclose(got.norm(dim=1), torch.ones(len(got)), atol=1e-5)


def test_evaluate_set_equals_per_split_similarities(tiny_cfg, data):
    seed_everything(0)
    model = build_model(tiny_cfg, data.num_classes, data.aspects)
    got = evaluate_set(model, data.val, tiny_cfg, torch.device("cpu"))
    feats = extract_features(
        model, data.val.images, data.val.aspects, tiny_cfg, torch.device("cpu")
    )
    per_split = []
    for q, g in data.val.splits:
        q, g = torch.as_tensor(q), torch.as_tensor(g)
        sim = cosine_similarity(feats[q], feats[g])
        per_split.append(evaluate_ranking(sim, data.val.ids[q], data.val.ids[g]))
    want = average_splits(per_split)
    assert got["num_splits"] == len(data.val.splits) == tiny_cfg.num_splits
    for key in ("rank1", "rank5", "rank10", "mAP", "mAP_std"):
        assert got[key] == pytest.approx(want[key], abs=1e-9), key


def test_half_precision_features_rank_like_float32(tiny_cfg, data):
    """What CUDA evaluation does (features stored in half) against float32 features."""
    seed_everything(0)
    model = build_model(tiny_cfg, data.num_classes, data.aspects)
    feats = extract_features(
        model, data.val.images, data.val.aspects, tiny_cfg, torch.device("cpu")
    )
    ids = data.val.ids
    for q, g in data.val.splits:
        q, g = torch.as_tensor(q), torch.as_tensor(g)
        full = evaluate_ranking(cosine_similarity(feats[q], feats[g]), ids[q], ids[g])
        half = evaluate_ranking(cosine_similarity(feats[q].half(), feats[g].half()), ids[q], ids[g])
        assert half["mAP"] == pytest.approx(full["mAP"], abs=0.01)
        assert half["rank1"] == pytest.approx(full["rank1"], abs=0.05)


def test_compile_flag_compiles_the_model(tiny_cfg, data, monkeypatch):
    compiled = []

    def fake_compile(model, *args, **kwargs):
        compiled.append(model)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    fit(tiny_cfg.replace(epochs=1, compile=True), data=data, device="cpu")
    assert len(compiled) == 1 and type(compiled[0]).__name__ == "PromptSG"


@pytest.mark.integration
@pytest.mark.skipif(
    os.environ.get("HANDREID_TEST_COMPILE", "0") in ("", "0"),
    reason="compiling tiny-vit takes ~3 min on a 2-core CPU; set HANDREID_TEST_COMPILE=1",
)
def test_compiled_forward_equals_eager(tiny_cfg, data):
    device = torch.device("cuda" if CUDA else "cpu")
    cfg = tiny_cfg.replace(dropout=0.0)
    seed_everything(0)
    model = build_model(cfg, data.num_classes, data.aspects).to(device).train()
    idx = torch.arange(16)
    x = normalize(data.train_images[idx].to(device))
    args = (x, data.train_aspects[idx].to(device), data.train_labels[idx].to(device))
    eager = model(*args)
    fast = torch.compile(model)(*args)
    for key in ("logits", "feat", "image_embed", "text_embed"):
        torch.testing.assert_close(fast[key], eager[key], rtol=1e-3, atol=1e-4, msg=key)


# ---- CUDA only -----------------------------------------------------------------------------
@needs_cuda
def test_cuda_epoch_syncs_with_the_host_at_most_once(tiny_cfg, data):
    import warnings

    device = torch.device("cuda")
    cfg = tiny_cfg.replace(epochs=2)
    placed = engine._place_data(data, device)
    assert placed.train_images.is_cuda, "the small image cache is held on the GPU"
    seed_everything(0)
    model = build_model(cfg, data.num_classes, data.aspects).to(device)
    optimizer = engine.build_optimizer(model, cfg, device)
    sampler = PKSampler(data.train_labels.numpy(), cfg.num_identities_per_batch, cfg.num_instances)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    augment = BatchAugment(cfg.flip_prob, cfg.pad, cfg.random_erasing)
    gen = torch.Generator(device=device).manual_seed(0)
    run = (model, placed, sampler, augment, optimizer, scheduler, LossComputer(cfg))
    engine.train_one_epoch(*run, 0, cfg, device, gen)  # warm-up (lazy initialisation)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            engine.train_one_epoch(*run, 1, cfg, device, gen)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [f"{w.filename}:{w.lineno}" for w in caught if "synchroniz" in str(w.message)]
    assert len(syncs) <= 1, f"{len(sampler)} steps synced {len(syncs)} times: {syncs}"


@needs_cuda
def test_cuda_data_on_the_gpu_trains_like_data_on_the_host(tiny_cfg, data, monkeypatch):
    cfg = tiny_cfg.replace(epochs=1, dropout=0.0)
    on_gpu = fit(cfg, data=data, device="cuda").history[0]
    monkeypatch.setattr(engine, "_place_data", lambda d, device: d)
    on_host = fit(cfg, data=data, device="cuda").history[0]
    assert on_gpu["loss"] == pytest.approx(on_host["loss"], rel=1e-3)
    assert on_gpu["mAP"] == pytest.approx(on_host["mAP"], abs=0.02)


@needs_cuda
def test_cuda_bf16_evaluation_ranks_like_fp32(tiny_cfg, data):
    device = torch.device("cuda")
    seed_everything(0)
    model = build_model(tiny_cfg, data.num_classes, data.aspects).to(device)
    val = data.val.to(device)
    fast = evaluate_set(model, val, tiny_cfg, device)
    plain = evaluate_set(model, val, tiny_cfg.replace(amp=False), device)
    assert fast["mAP"] == pytest.approx(plain["mAP"], abs=0.02)
    assert fast["rank1"] == pytest.approx(plain["rank1"], abs=0.05)
