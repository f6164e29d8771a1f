"""The training criterion: the one place the enabled losses are composed with their weights.

``criterion(model(batch), batch) -> (terms, metrics)``: ``terms`` maps each enabled loss
name to its weighted scalar (their sum is the training loss), ``metrics`` holds detached
accuracies for the log. Built from a config by ``model.build.build_criterion``.

Each loss of ``configs.defaults.LOSS_SPECS`` is computed by the function its row names,
defined here: it feeds a pure function of :mod:`model.objectives` from the model's outputs,
the batch and the criterion (the logit scale, this process's shard, the loss's settings
section as ``criterion.<section>``, each setting passed by keyword). How to add a loss:
docs/training.md, "Adding a loss".

Several processes (torchrun): with ``collective`` set, every batch-coupled loss (SDM/A-SDM,
ITC, CMPM, EFA) is computed over the global batch (each process's rows against the
gathered columns, :class:`model.shard.Shard`), ID and MLM are means over the global
batch, and every term's *value* is the global one on every process while its gradient is
this process's share: after DDP averages the gradients, the step is the one-process step
on the same global batch.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Protocol, Tuple

import torch

from configs.defaults import LOSS_SPECS

from . import objectives
from .shard import Shard

Tensors = Dict[str, torch.Tensor]
Term = Tuple[torch.Tensor, Tensors]  # (unweighted loss, detached metrics)


class Collective(Protocol):
    """The process group as the losses need it (``utils.distributed.ProcessGroupCollective``)."""

    rank: int
    world_size: int

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """[R, ...] -> [N * R, ...] in rank order, differentiable."""

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over processes, no gradient."""


class FMFALoss:
    """Loss names, weights and settings (the temperature's logit scale, and the settings
    sections of ``configs.defaults.LOSS_SPECS`` by their names, e.g. ``asdm=``, ``efa=``) of a
    training run; each section is then an attribute (``criterion.efa``). No defaults here:
    a section an enabled loss reads and the criterion was not given is an AttributeError.

    ``collective``: under torchrun, the process group; the losses are then those of the
    global batch (module docstring). None = this process's batch alone (one process, or
    ``train.global_batch_losses=false``).
    """

    def __init__(
        self,
        names: Iterable[str],
        weights: Mapping[str, float],
        *,
        logit_scale: float,
        collective: Optional[Collective] = None,
        **settings: Any,
    ):
        self.names: List[str] = list(names)
        self.weights: Dict[str, float] = dict(weights)
        self.logit_scale = logit_scale
        self.collective = collective
        self.settings: Dict[str, Any] = dict(settings)

    def __getattr__(self, name: str) -> Any:
        """A settings section by its name (called only for names that are not attributes)."""
        settings = self.__dict__.get("settings", {})
        if name in settings:
            return settings[name]
        raise AttributeError(f"{type(self).__name__} has no attribute or settings section {name!r}")

    def weight(self, name: str) -> float:
        return float(self.weights.get(name, 1.0))

    @property
    def shard(self) -> Optional[Shard]:
        """How this process's batch sits in the global batch (None: it is the whole batch)."""
        group = self.collective
        if group is None or group.world_size == 1:
            return None
        return Shard(group.gather, group.rank)

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


# ---- each loss fed from the model's outputs, the batch and the criterion ------------------
def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()


def sdm_term(loss: FMFALoss, out: Tensors, batch: Tensors, **adaptive: Any) -> Term:
    feats = out["image_feats"], out["text_feats"]
    return objectives.sdm_loss(*feats, batch["pids"], loss.logit_scale, shard=loss.shard, **adaptive), {}


def asdm_term(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    asdm = loss.asdm
    return sdm_term(loss, out, batch, adaptive=True, adaptive_factor=asdm.factor, adaptive_mode=asdm.mode)


def itc_term(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    return objectives.itc_loss(out["image_feats"], out["text_feats"], loss.logit_scale, shard=loss.shard), {}


def cmpm_term(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    return objectives.cmpm_loss(out["image_feats"], out["text_feats"], batch["pids"], shard=loss.shard), {}


def id_term(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    # Every process holds the same number of samples, so the mean of their means is global.
    image_logits, text_logits, pids = out["image_logits"], out["text_logits"], batch["pids"]
    accuracies = {"img_acc": _accuracy(image_logits, pids), "txt_acc": _accuracy(text_logits, pids)}
    return objectives.id_loss(image_logits, text_logits, pids), accuracies


def mlm_term(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    # The processes' captions carry different numbers of masked tokens: weight by the count.
    scores, labels = out["mlm_scores"], out["mlm_labels"]
    share = loss.global_share(labels.shape[0], scores.device)
    return objectives.mlm_loss(scores, labels) * share, {"mlm_acc": _accuracy(scores, labels) * share}


def efa_term(loss: FMFALoss, out: Tensors, batch: Tensors) -> Term:
    efa = loss.efa
    return objectives.efa_loss(
        out["text_tokens"],
        out["image_tokens"],
        text_margin=efa.text_margin,
        image_margin=efa.image_margin,
        lse_lambda=efa.lse_lambda,
        threshold=efa.threshold,
        block_elems=efa.block_elems,
        shard=loss.shard,
    ), {}


# Each loss's function, by the name its row of the table gives (a name not defined here fails at import).
LOSSES: Dict[str, Callable[[FMFALoss, Tensors, Tensors], Term]] = {
    name: globals()[spec.function] for name, spec in LOSS_SPECS.items()
}
