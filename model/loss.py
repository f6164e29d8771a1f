"""The training criterion: the one place the enabled losses are composed with their weights.

``criterion(model(batch), batch) -> (terms, metrics)``: ``terms`` maps each enabled loss
name to its weighted scalar (their sum is the training loss), ``metrics`` holds detached
accuracies for the log. Built from a config by ``model.build.build_criterion``.

Adding a loss: a pure function in :mod:`model.objectives`, one entry in :data:`LOSSES`
below (its name must be in ``configs.validation.LOSS_NAMES``, the config's allowed values;
a mismatch fails at import).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from configs.defaults import AsdmConfig, EfaConfig
from configs.validation import LOSS_NAMES
from . import objectives

Tensors = Dict[str, torch.Tensor]
Term = Tuple[torch.Tensor, Tensors]  # (unweighted loss, metrics)


@dataclass
class FMFALoss:
    """Loss names, weights and settings (A-SDM, EFA, temperature) of a training run.

    ``feature_gather``: on several GPUs with ``train.gather_features``, a differentiable
    all-gather applied to the global features and identities before the batch-wide losses
    (SDM/ITC/CMPM see the global batch; a deviation from the single-GPU reference).
    """
    names: List[str]
    weights: Dict[str, float] = field(default_factory=dict)
    logit_scale: float = 50.0
    asdm: AsdmConfig = field(default_factory=AsdmConfig)
    efa: EfaConfig = field(default_factory=EfaConfig)
    feature_gather: Optional[Callable[[torch.Tensor], torch.Tensor]] = None

    def __post_init__(self):
        unknown = [name for name in self.names if name not in LOSSES]
        if unknown or not self.names or len(set(self.names)) != len(self.names):
            raise ValueError(f"loss.names={'+'.join(self.names)!r}: expected distinct names among "
                             f"{', '.join(LOSSES)}")
        extra = sorted(set(self.weights) - set(self.names))
        if extra:
            raise ValueError(f"loss.weights has {extra}, which are not in loss.names={'+'.join(self.names)!r}")

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 1.0))

    def __call__(self, outputs: Tensors, batch: Tensors) -> Tuple[Tensors, Tensors]:
        """Weighted loss terms by name and detached metrics, in float32 outside autocast."""
        device = outputs["image_tokens"].device.type
        terms: Tensors = {}
        metrics: Tensors = {}
        with torch.autocast(device, enabled=False):
            outputs = {key: value.float() if value.is_floating_point() else value for key, value in outputs.items()}
            for name in self.names:
                value, extra = LOSSES[name](self, outputs, batch)
                terms[name] = self.weight(name) * value
                metrics.update({key: metric.detach() for key, metric in extra.items()})
        return terms, metrics

    def batch_features(self, outputs: Tensors, batch: Tensors) -> Tuple[torch.Tensor, ...]:
        """(image_feats, text_feats, pids), gathered across ranks when so configured."""
        feats = (outputs["image_feats"], outputs["text_feats"], batch["pids"])
        if self.feature_gather is not None:
            feats = tuple(self.feature_gather(x) for x in feats)
        return feats


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()


def _sdm(loss: FMFALoss, out: Tensors, batch: Tensors, adaptive: bool = False) -> Term:
    image, text, pids = loss.batch_features(out, batch)
    return objectives.sdm_loss(image, text, pids, loss.logit_scale, adaptive=adaptive,
                               adaptive_factor=loss.asdm.factor, adaptive_mode=loss.asdm.mode), {}


def _asdm(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    return _sdm(loss, out, batch, adaptive=True)


def _itc(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    image, text, _ = loss.batch_features(out, batch)
    return objectives.itc_loss(image, text, loss.logit_scale), {}


def _cmpm(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    return objectives.cmpm_loss(*loss.batch_features(out, batch)), {}


def _id(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    pids = batch["pids"]
    value = objectives.id_loss(out["image_logits"], out["text_logits"], pids)
    return value, {"img_acc": _accuracy(out["image_logits"], pids), "txt_acc": _accuracy(out["text_logits"], pids)}


def _mlm(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    scores, labels = out["mlm_scores"], out["mlm_labels"]
    return objectives.mlm_loss(scores, labels), {"mlm_acc": _accuracy(scores, labels)}


def _efa(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    efa = loss.efa
    return objectives.efa_loss(out["text_tokens"], out["image_tokens"], text_margin=efa.text_margin,
                               image_margin=efa.image_margin, lse_lambda=efa.lse_lambda,
                               threshold=efa.threshold, block_elems=efa.block_elems), {}


LOSSES: Dict[str, Callable[[FMFALoss, Tensors, Tensors], Term]] = {
    "itc": _itc, "sdm": _sdm, "a-sdm": _asdm, "cmpm": _cmpm, "id": _id, "mlm": _mlm, "efa": _efa,
}
if set(LOSSES) != set(LOSS_NAMES):
    raise ImportError(f"model.loss.LOSSES {sorted(LOSSES)} and configs.validation.LOSS_NAMES "
                      f"{sorted(LOSS_NAMES)} must name the same losses")
