"""Training losses: identity cross-entropy, batch-hard triplet, symmetric supervised contrastive.

Every loss is computed in float32 with autocast switched off, so bf16 activations from the
model do not cost precision in distances or low-temperature logits. No function here reads a
value back to the host, so a training step stays free of device syncs.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor

from handreid.config import TrainConfig
from handreid.errors import ConfigError
from handreid.evaluation import l2_normalize


def _no_autocast(t: Tensor) -> torch.autocast:
    return torch.autocast(device_type=t.device.type, enabled=False)


def cross_entropy(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Identity loss. logits: (B, C), labels: (B,) int64 in [0, C) -> scalar."""
    with _no_autocast(logits):
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)


def pairwise_distances(feats: Tensor) -> Tensor:
    """Euclidean distances. feats: (B, D) -> (B, B) float32.

    The squared distance is clamped at 1e-12 before the square root so the zero diagonal
    (and duplicate features) give a finite gradient instead of NaN.
    """
    x = feats.float()
    sq = x.pow(2).sum(dim=1)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
    return d2.clamp_min(1e-12).sqrt()


def batch_hard_triplet(feats: Tensor, labels: Tensor, margin: float) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017) on Euclidean distances.

    feats: (B, D), labels: (B,) -> scalar. For each anchor take the farthest positive (not
    itself) and the nearest negative; average relu(d_ap - d_an + margin) over the anchors
    that have both. With no such anchor the result is 0 and still part of the graph.
    """
    with _no_autocast(feats):
        dist = pairwise_distances(feats)  # (B, B)
        same = labels[:, None] == labels[None, :]
        eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
        pos = same & ~eye
        neg = ~same
        # distances are >= 0, so 0 is a neutral filler for the max over positives
        d_ap = dist.masked_fill(~pos, 0.0).amax(dim=1)
        d_an = dist.masked_fill(~neg, float("inf")).amin(dim=1)
        valid = pos.any(dim=1) & neg.any(dim=1)
        # where() (not a multiply) so the inf of anchors without negatives cannot become NaN
        per_anchor = torch.where(valid, F.relu(d_ap - d_an + margin), dist.new_zeros(()))
        return per_anchor.sum() / valid.sum().clamp_min(1)


def symmetric_supcon(
    image_embeds: Tensor, text_embeds: Tensor, labels: Tensor, temperature: float
) -> Tensor:
    """Supervised contrastive loss between images and texts, averaged over both directions.

    image_embeds: (B, E), text_embeds: (B, E), labels: (B,) -> scalar. Row i of
    ``logits = norm(img) @ norm(txt).T / temperature`` (B, B) has positives P(i) = {j :
    labels[j] == labels[i]} (always including i itself); the image->text loss is
    mean_i -(1/|P(i)|) sum_{p in P(i)} log_softmax(logits[i])[p], the text->image loss the
    same on logits.T.
    """
    with _no_autocast(image_embeds):
        logits = l2_normalize(image_embeds) @ l2_normalize(text_embeds).T / temperature
        pos = (labels[:, None] == labels[None, :]).float()  # (B, B), symmetric
        num_pos = pos.sum(dim=1)
        i2t = -(F.log_softmax(logits, dim=1) * pos).sum(dim=1) / num_pos
        t2i = -(F.log_softmax(logits.T, dim=1) * pos).sum(dim=1) / num_pos
        return (i2t.mean() + t2i.mean()) / 2


def supcon_weight(cfg: TrainConfig, epoch: int) -> float:
    """Weight of the SupCon term at ``epoch`` (0-based).

    ``supcon_ramp: none`` -> supcon_loss_weight throughout; ``linear`` ->
    supcon_loss_weight * min(1, (epoch + 1) / epochs): 1/epochs of it in the first epoch,
    the full weight in the last.
    """
    if epoch < 0:
        raise ValueError(f"epoch={epoch} is out of range; epochs are counted from 0")
    if cfg.supcon_ramp == "none":
        return cfg.supcon_loss_weight
    if cfg.supcon_ramp == "linear":
        return cfg.supcon_loss_weight * min(1.0, (epoch + 1) / cfg.epochs)
    raise ValueError(
        f"supcon_ramp={cfg.supcon_ramp!r} is not allowed; choose one of ['none', 'linear']"
    )


class LossComputer:
    """The PromptSG objective built from a TrainConfig.

    total = loss_id_weight * CE + loss_tri_weight * triplet + supcon_weight(epoch) * SupCon.
    A term whose weight is 0 is not computed (and its model output need not be present).
    """

    def __init__(self, cfg: TrainConfig) -> None:
        if cfg.loss_id_weight == 0 and cfg.loss_tri_weight == 0 and cfg.supcon_loss_weight == 0:
            raise ConfigError(
                "loss_id_weight, loss_tri_weight and supcon_loss_weight are all 0; "
                "at least one loss must have a positive weight"
            )
        self.cfg = cfg

    def __call__(
        self, outputs: Mapping[str, Tensor], labels: Tensor, epoch: int
    ) -> tuple[Tensor, dict[str, Tensor | float]]:
        """outputs: "logits" (B, C), "feat" (B, D) pre-BN neck feature, "image_embed" (B, E),
        "text_embed" (B, E); labels: (B,) int64.

        Returns the total loss (scalar, with graph) and detached terms "loss", "id", "tri",
        "supcon" (tensors, so logging them needs no host sync) and "supcon_w" (float).
        """
        cfg = self.cfg
        w_sup = supcon_weight(cfg, epoch)
        zero = torch.zeros((), device=labels.device)
        id_loss = tri_loss = sup_loss = zero
        if cfg.loss_id_weight:
            id_loss = cross_entropy(_get(outputs, "logits"), labels, cfg.label_smoothing)
        if cfg.loss_tri_weight:
            tri_loss = batch_hard_triplet(_get(outputs, "feat"), labels, cfg.triplet_margin)
        if w_sup:
            sup_loss = symmetric_supcon(
                _get(outputs, "image_embed"),
                _get(outputs, "text_embed"),
                labels,
                cfg.supcon_temperature,
            )
        total = cfg.loss_id_weight * id_loss + cfg.loss_tri_weight * tri_loss + w_sup * sup_loss
        terms = {
            "loss": total.detach(),
            "id": id_loss.detach(),
            "tri": tri_loss.detach(),
            "supcon": sup_loss.detach(),
            "supcon_w": w_sup,
        }
        return total, terms


def _get(outputs: Mapping[str, Tensor], key: str) -> Tensor:
    if key not in outputs:
        raise KeyError(f"model outputs lack {key!r} (have {sorted(outputs)}); the loss needs it")
    return outputs[key]


__all__ = [
    "LossComputer",
    "batch_hard_triplet",
    "cross_entropy",
    "pairwise_distances",
    "supcon_weight",
    "symmetric_supcon",
]
