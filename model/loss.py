"""The training criterion: the one place the enabled losses are composed with their weights.

``criterion(model(batch), batch) -> (terms, metrics)``: ``terms`` maps each enabled loss
name to its weighted scalar (their sum is the training loss), ``metrics`` holds detached
accuracies for the log. Built from a config by ``model.build.build_criterion``.

Adding a loss: a pure function in :mod:`model.objectives`, one entry in :data:`LOSSES`
below, and its row in ``configs.defaults.LOSS_SPECS`` (its needs, and its settings
section with defaults and allowed values; the names must agree, a mismatch fails at
import); a settings section is a field of :class:`FMFALoss`; a new head goes in
:mod:`model.fmfa`, with its arguments from a config and from weights
(``head_arguments``, ``head_arguments_in``).

Several processes (torchrun): with ``collective`` set, every batch-coupled loss (SDM/A-SDM,
ITC, CMPM, EFA) is computed over the global batch (each process's rows against the
gathered columns, :class:`model.objectives.Shard`), ID and MLM are means over the global
batch, and every term's *value* is the global one on every process while its gradient is
this process's share: after DDP averages the gradients, the step is the one-process step
on the same global batch.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, asdict, dataclass
from typing import Callable, Dict, List, Optional, Protocol, Tuple

import torch

from configs.defaults import LOSS_NAMES, AsdmConfig, EfaConfig

from . import objectives

Tensors = Dict[str, torch.Tensor]
Term = Tuple[torch.Tensor, Tensors]  # (unweighted loss, metrics)


class Collective(Protocol):
    """The process group as the losses need it (``utils.distributed.ProcessGroupCollective``)."""

    rank: int
    world_size: int

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """[R, ...] -> [N * R, ...] in rank order, differentiable."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over processes, no gradient."""


@dataclass
class FMFALoss:
    """Loss names, weights and settings (A-SDM, EFA, temperature) of a training run.

    Every setting is given (no defaults here: one left out is a TypeError when the
    criterion is built, never a silent value); the settings sections are those of
    ``configs.defaults.LOSS_SPECS``, under the same names.

    ``collective``: under torchrun, the process group; the losses are then those of the
    global batch (module docstring). None = this process's batch alone (one process, or
    ``train.global_batch_losses=false``).
    """

    names: List[str]
    weights: Dict[str, float]
    _: KW_ONLY
    logit_scale: float
    asdm: AsdmConfig
    efa: EfaConfig
    collective: Optional[Collective] = None

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 1.0))

    @property
    def shard(self) -> Optional[objectives.Shard]:
        """How this process's batch sits in the global batch (None: it is the whole batch)."""
        group = self.collective
        if group is None or group.world_size == 1:
            return None
        return objectives.Shard(group.gather, group.rank)

    def __call__(self, outputs: Tensors, batch: Tensors) -> Tuple[Tensors, Tensors]:
        """Weighted loss terms by name and detached metrics, in float32 outside autocast
        (float64 outputs stay float64: the float64 reference of benchmarks/ddp_equality.py)."""
        device = outputs["image_tokens"].device.type
        terms: Tensors = {}
        metrics: Tensors = {}
        with torch.autocast(device, enabled=False):
            outputs = {key: at_least_float32(value) for key, value in outputs.items()}
            for name in self.names:
                value, extra = LOSSES[name](self, outputs, batch)
                terms[name] = self.weight(name) * value
                metrics.update({key: metric.detach() for key, metric in extra.items()})
        if self.shard is not None:
            terms, metrics = self._global_values(terms, metrics)
        return terms, metrics

    def _global_values(self, terms: Tensors, metrics: Tensors) -> Tuple[Tensors, Tensors]:
        """Every process's shares -> the global batch's values (their mean over processes),
        in one collective; a term keeps this process's gradient."""
        shares = torch.stack([*(t.detach() for t in terms.values()), *metrics.values()])
        means = self.collective.sum(shares) / self.collective.world_size
        globals_ = dict(zip([*terms, *metrics], means))
        terms = {name: term + (globals_[name] - term.detach()) for name, term in terms.items()}
        return terms, {name: globals_[name] for name in metrics}

    def global_share(self, count: int, device: torch.device) -> torch.Tensor:
        """count x N / (the sum of count over processes): turns a mean over this process's
        ``count`` items into its share of the mean over every process's items."""
        if self.shard is None:
            return torch.ones((), device=device)
        local = torch.tensor(float(count), device=device)
        return local * self.collective.world_size / self.collective.sum(local)


def at_least_float32(value: torch.Tensor) -> torch.Tensor:
    """Half and bfloat16 -> float32; float32, float64 and integer tensors as they are."""
    if not value.is_floating_point():
        return value
    return value.to(torch.promote_types(value.dtype, torch.float32))


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()


def _sdm(loss: FMFALoss, out: Tensors, batch: Tensors, adaptive: bool = False) -> Term:
    return objectives.sdm_loss(
        out["image_feats"],
        out["text_feats"],
        batch["pids"],
        loss.logit_scale,
        adaptive=adaptive,
        adaptive_factor=loss.asdm.factor,
        adaptive_mode=loss.asdm.mode,
        shard=loss.shard,
    ), {}


def _asdm(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    return _sdm(loss, out, batch, adaptive=True)


def _itc(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    return objectives.itc_loss(out["image_feats"], out["text_feats"], loss.logit_scale, shard=loss.shard), {}


def _cmpm(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    return objectives.cmpm_loss(out["image_feats"], out["text_feats"], batch["pids"], shard=loss.shard), {}


def _id(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    # Every process holds the same number of samples, so the mean of their means is global.
    pids = batch["pids"]
    value = objectives.id_loss(out["image_logits"], out["text_logits"], pids)
    return value, {"img_acc": _accuracy(out["image_logits"], pids), "txt_acc": _accuracy(out["text_logits"], pids)}


def _mlm(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    # The processes' captions carry different numbers of masked tokens: weight by the count.
    scores, labels = out["mlm_scores"], out["mlm_labels"]
    share = loss.global_share(labels.shape[0], scores.device)
    return objectives.mlm_loss(scores, labels) * share, {"mlm_acc": _accuracy(scores, labels) * share}


def _efa(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    # every EFA setting, by its name: none can be left to efa_loss's default
    return objectives.efa_loss(out["text_tokens"], out["image_tokens"], **asdict(loss.efa), shard=loss.shard), {}


LOSSES: Dict[str, Callable[[FMFALoss, Tensors, Tensors], Term]] = {
    "itc": _itc,
    "sdm": _sdm,
    "a-sdm": _asdm,
    "cmpm": _cmpm,
    "id": _id,
    "mlm": _mlm,
    "efa": _efa,
}
if set(LOSSES) != set(LOSS_NAMES):
    raise ImportError(
        f"model.loss.LOSSES {sorted(LOSSES)} and configs.defaults.LOSS_NAMES "
        f"{sorted(LOSS_NAMES)} must name the same losses"
    )
