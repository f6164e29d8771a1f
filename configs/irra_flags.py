"""IRRA-style command-line options (``--batch_size 64``), answered with the config key to use.

IRRA (and the FMFA authors' code, built on it) take one argparse option per setting; here
every setting is a dotted ``key=value`` override of ``configs/defaults.py``. A user with
IRRA's habits gets, instead of argparse's "unrecognized arguments", the override each
option becomes. docs/training.md ("Coming from IRRA") prints the same table.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Dict, List, Optional, Sequence

from configs.defaults import Config

# IRRA option -> the override it becomes. "{}" is replaced by the option's value; an entry
# without "{}" is an option without a value (a switch) or one this project has no key for.
IRRA_FLAGS: Dict[str, str] = {
    "--name": "train.name={}",
    "--output_dir": "train.output_dir={}",
    "--log_period": "train.log_period={}",
    "--eval_period": "train.eval_period={}",
    "--val_dataset": "eval.split={}",
    "--resume": "train.resume=RUN_FOLDER (a run folder or its last.pth)",
    "--resume_ckpt_file": "train.resume={}",
    "--pretrain_choice": "model.pretrain=data/ViT-B-16.pt (a weights file, or open_clip:ViT-B-16/openai)",
    "--temperature": "model.temperature={}",
    "--img_aug": "data.augment=true",
    "--cmt_depth": "model.cmt_depth={}",
    "--lr_factor": "solver.new_module_lr_factor={}",
    "--MLM": "loss.names=a-sdm+mlm+id+efa (mlm among the loss names)",
    "--loss_names": "loss.names={}",
    "--mlm_loss_weight": "loss.weights.mlm={}",
    "--id_loss_weight": "loss.weights.id={}",
    "--img_size": "model.image_size=[384,128]",
    "--text_length": "data.text_length={}",
    "--vocab_size": "model.vocab_size={}",
    "--optimizer": "solver.optimizer={}",
    "--lr": "solver.lr={}",
    "--bias_lr_factor": "solver.bias_lr_factor={}",
    "--momentum": "solver.momentum={}",
    "--weight_decay": "solver.weight_decay={}",
    "--weight_decay_bias": "solver.bias_weight_decay={}",
    "--alpha": "solver.betas=[{},0.999] (Adam's beta1)",
    "--beta": "solver.betas=[0.9,{}] (Adam's beta2)",
    "--num_epoch": "solver.epochs={}",
    "--milestones": "solver.milestones=[20,50]",
    "--gamma": "solver.gamma={}",
    "--warmup_factor": "solver.warmup_factor={}",
    "--warmup_epochs": "solver.warmup_epochs={}",
    "--warmup_method": "solver.warmup_method={}",
    "--lrscheduler": "solver.scheduler={}",
    "--target_lr": "solver.target_lr={}",
    "--power": "solver.power={}",
    "--dataset_name": "data.dataset={}",
    "--sampler": "data.sampler={}",
    "--num_instance": "data.num_instance={}",
    "--root_dir": "data.root={}",
    "--batch_size": "data.batch_size={}",
    "--test_batch_size": "eval.batch_size={}",
    "--num_workers": "data.num_workers={}",
    "--config_file": "python test.py RUN_FOLDER (reads its config.yaml), or --config FILE",
    "--test": "python test.py RUN_FOLDER (evaluation is its own program)",
    "--local_rank": "nothing: torchrun sets the rank (torchrun --nproc_per_node=N train.py ...)",
    "--masked_token_rate": "nothing: fixed at the authors' 0.15 (datasets/bases.py, no key)",
    "--masked_token_unchanged_rate": "nothing: fixed at the authors' 0.1 (datasets/bases.py, no key)",
    "--stride_size": "nothing: the patch stride is model.patch_size (16 for ViT-B/16)",
}


def config_keys() -> Dict[str, str]:
    """Each config key's last part -> the dotted key (``batch_size`` -> ``data.batch_size``;
    the first section wins where two share a name)."""
    cfg, keys = Config(), {}
    for section in dataclasses.fields(cfg):
        for field in dataclasses.fields(getattr(cfg, section.name)):
            keys.setdefault(field.name, f"{section.name}.{field.name}")
    return keys


def _value_after(argv: Sequence[str], index: int) -> Optional[str]:
    following = argv[index + 1] if index + 1 < len(argv) else ""
    return following if following and not following.startswith("-") and "=" not in following else None


def _is_switch(key: str) -> bool:
    """``key`` (dotted) is a bool setting: its option is a switch that means ``key=true``."""
    section, _, leaf = key.partition(".")
    return isinstance(getattr(getattr(Config(), section), leaf), bool)


def suggestion(flag: str, value: Optional[str]) -> Optional[str]:
    """The override an unknown ``--flag [value]`` becomes, or None when nothing fits. A bool
    key's option without a value is a switch (IRRA's ``--i2t``): ``key=true``."""
    template = IRRA_FLAGS.get(flag)
    if template is None:
        key = config_keys().get(flag.lstrip("-").replace("-", "_"))
        if key and value is None and _is_switch(key):
            return f"{key}=true"
        template = f"{key}={{}}" if key else None
    if template is None:
        return None
    return template.replace("{}", value if value is not None else "VALUE")


def foreign_flag_lines(argv: Sequence[str], parser: argparse.ArgumentParser) -> List[str]:
    """``--flag value -> key=value`` for every option of ``argv`` the parser does not know and
    that has an answer here."""
    known = set(parser._option_string_actions)  # argparse keeps no public list of its options
    lines = []
    for index, token in enumerate(argv):
        flag, equals, value = token.partition("=")
        if not flag.startswith("--") or flag in known:
            continue
        value = value if equals else _value_after(argv, index)
        answer = suggestion(flag, value)
        if answer:
            lines.append(f"{flag}{' ' + value if value is not None else ''} -> {answer}")
    return lines


def refuse_foreign_flags(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Exit through ``parser.error`` (status 2) naming the override of every IRRA-style option."""
    lines = foreign_flag_lines(argv, parser)
    if lines:
        parser.error(
            "IRRA-style options are not taken here; settings are dotted key=value overrides: "
            + "; ".join(lines)
            + " (IRRA's options and their keys: docs/training.md, 'Coming from IRRA')"
        )
