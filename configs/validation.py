"""Range and choice checks of a :class:`Config`, run before anything heavy is built.

:func:`validate` collects every problem and raises one :class:`ConfigError` listing them,
each naming the dotted key, the value given and what is allowed.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Iterable, List

from configs.datasets import NO_VAL, SPLITS, dataset_problem
from configs.defaults import LOSS_NAMES, LOSS_SETTINGS, Config, SolverConfig
from configs.errors import ConfigError

# Every check of a config is made here, when it is loaded (and at the public builders of
# SPEC section 8, which may be given a config built in Python); the code that builds from a
# config takes its values as checked. The allowed values are declared below, except the
# datasets' (configs/datasets.py) and each loss settings section's (its requirements()).

ID_CLASSES = ("captions", "identities")
PRECISIONS = ("fp32", "amp_bf16", "amp_fp16", "pure_fp16")
SAMPLERS = ("random", "identity")
SHARD_SPLITS = ("batches", "blocks")
OPTIMIZERS = ("Adam", "AdamW", "SGD")
SCHEDULERS = ("cosine", "step", "linear", "exponential", "poly")
WARMUP_METHODS = ("linear", "constant")


def validate(cfg: Config) -> None:
    """Raise one :class:`ConfigError` listing every out-of-range or unknown value of ``cfg``."""
    problems: List[str] = []

    def need(ok: bool, key: str, value: Any, allowed: str) -> None:
        if not ok:
            problems.append(f"{key}={value!r}: must be {allowed}")

    def choice(key: str, value: Any, allowed: Iterable[str]) -> None:
        allowed = tuple(allowed)
        need(value in allowed, key, value, f"one of {', '.join(allowed)}")

    m, d, s, t, e = cfg.model, cfg.data, cfg.solver, cfg.train, cfg.eval

    # model
    need(m.patch_size >= 1, "model.patch_size", m.patch_size, ">= 1")
    size_ok = len(m.image_size) == 2 and all(v >= 1 for v in m.image_size)
    need(size_ok, "model.image_size", m.image_size, "two positive ints [height, width]")
    if size_ok and m.patch_size >= 1:
        need(
            all(v % m.patch_size == 0 for v in m.image_size),
            "model.image_size",
            m.image_size,
            f"multiples of model.patch_size={m.patch_size}",
        )
    for key in (
        "embed_dim",
        "vision_width",
        "vision_layers",
        "text_width",
        "text_layers",
        "context_length",
        "vocab_size",
        "cmt_depth",
    ):
        need(getattr(m, key) >= 1, f"model.{key}", getattr(m, key), ">= 1")
    choice("model.id_classes", m.id_classes, ID_CLASSES)
    need(m.temperature > 0, "model.temperature", m.temperature, "> 0")
    # Attention heads are width / 64 (CLIP's convention; the IRR head uses embed_dim / 64).
    for key in ("embed_dim", "vision_width", "text_width"):
        need(getattr(m, key) % 64 == 0, f"model.{key}", getattr(m, key), "a multiple of 64 (64 per attention head)")

    # losses
    names = cfg.loss.names
    unknown = [name for name in names if name not in LOSS_NAMES]
    need(
        bool(names) and not unknown,
        "loss.names",
        "+".join(names),
        f"a '+'-joined subset of {', '.join(LOSS_NAMES)}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""),
    )
    need(len(set(names)) == len(names), "loss.names", "+".join(names), "without a loss named twice")
    extra = sorted(set(cfg.loss.weights) - set(names))
    need(
        not extra,
        "loss.weights",
        cfg.loss.weights,
        f"keyed by enabled losses ({', '.join(names)}); not enabled: {', '.join(extra)}",
    )
    for section in LOSS_SETTINGS:
        settings = getattr(cfg, section)
        for holds, key, allowed in settings.requirements():
            need(holds, f"{section}.{key}", getattr(settings, key), allowed)

    # data
    problem = dataset_problem(d.dataset)
    need(not problem, "data.dataset", d.dataset, problem)
    choice("data.train_split", d.train_split, SPLITS)
    need(d.batch_size >= 1, "data.batch_size", d.batch_size, ">= 1")
    choice("data.sampler", d.sampler, SAMPLERS)
    need(d.num_instance >= 1, "data.num_instance", d.num_instance, ">= 1")
    need(d.shard_epoch_samples >= 0, "data.shard_epoch_samples", d.shard_epoch_samples, ">= 0 (0: one pass)")
    need(d.shuffle_buffer >= 1, "data.shuffle_buffer", d.shuffle_buffer, ">= 1")
    choice("data.shard_split", d.shard_split, SHARD_SPLITS)
    need(
        not d.shards or d.sampler == "random",
        "data.sampler",
        d.sampler,
        "random with data.shards (the shards stream in order; identity needs random access)",
    )
    if d.sampler == "identity" and d.batch_size >= 1 and d.num_instance >= 1:
        need(
            d.batch_size % d.num_instance == 0,
            "data.batch_size",
            d.batch_size,
            f"divisible by data.num_instance={d.num_instance} with the identity sampler",
        )
    need(
        1 <= d.text_length <= m.context_length,
        "data.text_length",
        d.text_length,
        f"in 1..model.context_length={m.context_length}",
    )
    need(d.num_workers >= 0, "data.num_workers", d.num_workers, ">= 0")

    # solver
    choice("solver.optimizer", s.optimizer, OPTIMIZERS)
    need(s.lr > 0, "solver.lr", s.lr, "> 0")
    need(s.weight_decay >= 0, "solver.weight_decay", s.weight_decay, ">= 0")
    need(len(s.betas) == 2 and all(0 <= b < 1 for b in s.betas), "solver.betas", s.betas, "two values in [0, 1)")
    need(s.eps > 0, "solver.eps", s.eps, "> 0")
    for key in ("new_module_lr_factor", "bias_lr_factor"):
        need(getattr(s, key) >= 0, f"solver.{key}", getattr(s, key), ">= 0")
    choice("solver.scheduler", s.scheduler, SCHEDULERS)
    need(list(s.milestones) == sorted(s.milestones), "solver.milestones", s.milestones, "increasing epochs")
    need(s.epochs >= 1, "solver.epochs", s.epochs, ">= 1")
    need(
        0 <= s.warmup_epochs < max(s.epochs, 1),
        "solver.warmup_epochs",
        s.warmup_epochs,
        f"in 0..solver.epochs-1 (solver.epochs={s.epochs})",
    )
    need(s.warmup_factor >= 0, "solver.warmup_factor", s.warmup_factor, ">= 0")
    choice("solver.warmup_method", s.warmup_method, WARMUP_METHODS)
    need(s.target_lr >= 0, "solver.target_lr", s.target_lr, ">= 0")

    # train
    choice("train.precision", t.precision, PRECISIONS)
    # fp16 optimizer state: an epsilon below fp16's smallest step (6e-8) rounds to 0 and
    # Adam divides by zero where a gradient is 0 (the reference uses 1e-3 for this reason).
    need(
        t.precision != "pure_fp16" or s.optimizer == "SGD" or s.eps >= 6e-8,
        "solver.eps",
        s.eps,
        ">= 6e-8 with train.precision=pure_fp16 (fp16 Adam state; the reference uses 1e-3)",
    )
    need(re.fullmatch(r"auto|cpu|cuda(:\d+)?", t.device), "train.device", t.device, "auto, cpu, cuda or cuda:N")
    need(t.dist_timeout_minutes > 0, "train.dist_timeout_minutes", t.dist_timeout_minutes, "> 0")
    need(t.log_period >= 1, "train.log_period", t.log_period, ">= 1")
    need(t.eval_period >= 1, "train.eval_period", t.eval_period, ">= 1")
    need(t.checkpoint_every_steps >= 0, "train.checkpoint_every_steps", t.checkpoint_every_steps, ">= 0 (0: off)")

    # eval
    choice("eval.split", e.split, SPLITS)
    for name in e.cross_domain:
        problem = dataset_problem(name)
        need(not problem, "eval.cross_domain", name, problem)
    if d.dataset in NO_VAL:
        for key, split in (("eval.split", e.split), ("data.train_split", d.train_split)):
            need(split != "val", key, split, f"train or test ({d.dataset} has no val split)")
    need(e.batch_size >= 1, "eval.batch_size", e.batch_size, ">= 1")
    need(e.query_chunk >= 1, "eval.query_chunk", e.query_chunk, ">= 1")

    if problems:
        raise ConfigError(
            f"invalid configuration ({len(problems)} problem"
            f"{'s' if len(problems) > 1 else ''}):\n  " + "\n  ".join(problems)
        )


def validate_solver(solver: SolverConfig) -> None:
    """:func:`validate` of a ``solver`` section alone: the solver's public builders take the
    section, not the whole config. The other sections are defaults, in fp32: the check of
    ``solver.eps`` against ``train.precision`` belongs to the whole config."""
    cfg = Config()
    validate(dataclasses.replace(cfg, solver=solver, train=dataclasses.replace(cfg.train, precision="fp32")))
