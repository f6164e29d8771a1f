"""Per-epoch learning-rate schedule: warm-up, then one of several decays.

The lr during epoch ``e`` (0-based) is the base lr times :func:`lr_factor` ``(e)``; the
loop calls ``scheduler.step()`` once after each epoch (a :class:`LambdaLR`, so state_dict
and resume work). With ``w`` = warmup_epochs, ``E`` = epochs, ``r = (e - w) / (E - w)``
clamped to [0, 1] and ``t`` = target_lr as a fraction of the group's base lr:

* warm-up (``e < w``): linear ``warmup_factor (1 - e / w) + e / w``, or constant ``warmup_factor``;
* ``cosine``: ``t + (1 - t) (1 + cos(pi r)) / 2``;  ``linear``: ``t + (1 - t) (1 - r)``;
* ``step``: ``gamma ** (milestones passed)``, milestones absolute epochs;
* ``exponential``: ``gamma ** (e - w)``;  ``poly``: ``t + (1 - t) (1 - r) ** power``.

target_lr is absolute, so groups of different base lrs decay to the same value. Where
IRRA's schedules differ (``linear``, ``exp``, ``poly``): docs/method.md, "Solver".
"""

from __future__ import annotations

import math
from bisect import bisect_right

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from configs.validation import validate_solver

__all__ = ["build_lr_scheduler", "lr_at", "lr_factor"]


def lr_factor(epoch: int, cfg, base_lr: float | None = None) -> float:
    """Multiplier of a parameter group's base lr during epoch ``epoch`` (0-based).

    ``cfg`` is the ``solver`` section of a loaded (validated) config.  ``base_lr`` (default
    ``cfg.lr``) is the base lr of the group the factor is for; it only matters when
    ``cfg.target_lr`` is non-zero, since ``target_lr`` is an absolute lr (module docstring).
    """
    name = cfg.scheduler
    warmup = int(cfg.warmup_epochs)

    if epoch < warmup:
        if cfg.warmup_method == "constant":
            return float(cfg.warmup_factor)
        alpha = epoch / warmup
        return float(cfg.warmup_factor) * (1.0 - alpha) + alpha

    if name == "step":
        return float(cfg.gamma) ** bisect_right(list(cfg.milestones), epoch)
    if name == "exponential":
        return float(cfg.gamma) ** (epoch - warmup)

    base = float(cfg.lr if base_lr is None else base_lr)
    target = float(cfg.target_lr) / base if base != 0.0 else 0.0
    span = int(cfg.epochs) - warmup
    ratio = (epoch - warmup) / span if span > 0 else 1.0
    ratio = min(max(ratio, 0.0), 1.0)

    if name == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * ratio))
    elif name == "linear":
        decay = 1.0 - ratio
    else:  # poly
        decay = (1.0 - ratio) ** float(cfg.power)
    return target + (1.0 - target) * decay


def lr_at(epoch: int, cfg, base_lr: float | None = None) -> float:
    """The lr (absolute) of a group whose base lr is ``base_lr`` (default ``cfg.lr``)."""
    base = float(cfg.lr if base_lr is None else base_lr)
    return base * lr_factor(epoch, cfg, base)


def build_lr_scheduler(optimizer: Optimizer, cfg, last_epoch: int = -1) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_factor` to every parameter group.

    Each group's base lr is its ``initial_lr`` (set from its ``lr`` when the scheduler is
    first built).  Construction sets the lrs of epoch 0; call ``step()`` after each epoch.
    The per-group functions are plain closures, so ``state_dict()`` stores only the
    counters (``last_epoch``, ``base_lrs``, ...), and the schedule itself always comes
    from the current config.  To resume, build the optimizer and scheduler as for a new
    run and call ``load_state_dict`` on both. The section is validated here, once (a public
    entry), not at every epoch.
    """
    validate_solver(cfg)

    def make(group_base_lr: float):
        def factor(epoch: int) -> float:
            return lr_factor(epoch, cfg, group_base_lr)

        return factor

    bases = [float(g.get("initial_lr", g["lr"])) for g in optimizer.param_groups]
    return LambdaLR(optimizer, [make(b) for b in bases], last_epoch=last_epoch)
