"""Check every run of a run.sh section before the first one starts, in run.sh's words.

    python -m processor.section_check --section paper --as model.pretrain=CLIP_WEIGHTS \
        --run --config configs/cuhk_pedes.yaml data.root=... --run --config ...

Each ``--run`` is one train.py command line. Its config, weights and datasets are checked as
train.py checks them (:mod:`processor.preflight`), and whether a GPU is visible for a GPU-sized
run; every problem of every run is listed once, with the config keys that run.sh sets from its
environment written as those variables (``--as KEY=VARIABLE``). Exit status 2 when there is any.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Callable, Dict, List, Optional, Sequence

from configs.errors import ConfigError, UserError, raise_all
from configs.loader import load_config
from processor.preflight import check_device, run_input_checks
from utils.cli import USER_ERROR_STATUS, describe
from utils.distributed import pick_device
from utils.gpu import missing_gpu_reason

RUN = "--run"


def split_runs(argv: Sequence[str]) -> tuple[List[str], List[List[str]]]:
    """(the options before the first ``--run``, each run's train.py arguments)."""
    head: List[str] = []
    runs: List[List[str]] = []
    for arg in argv:
        if arg == RUN:
            runs.append([])
        elif runs:
            runs[-1].append(arg)
        else:
            head.append(arg)
    return head, runs


def run_checks(train_argv: Sequence[str]) -> List[Callable[[], None]]:
    """The checks train.py makes before it starts, for one of its command lines."""
    config = train_argv[1] if len(train_argv) > 1 and train_argv[0] == "--config" else None
    overrides = train_argv[2:] if config else train_argv
    try:
        cfg = load_config(config, overrides)
    except ConfigError as error:
        return [lambda failure=error: reraise(failure)]
    return [*run_input_checks(cfg), lambda: check_gpu(cfg)]


def reraise(error: UserError) -> None:
    raise error


def check_gpu(cfg) -> None:
    """A GPU-sized run where no GPU is visible, answered with what run.sh offers instead."""
    try:
        check_device(cfg, pick_device(cfg.train.device))
    except ConfigError:
        raise ConfigError(
            f"these runs train CLIP ViT-B/16 at {cfg.model.image_size[0]} x {cfg.model.image_size[1]}, and here "
            f"{missing_gpu_reason()}: run the section where a GPU is visible "
            "(GPU=N picks one), or SMOKE=1 for a toy-size try of every run on the CPU"
        ) from None


def in_words(message: str, names: Dict[str, str]) -> str:
    """``message`` with each config key of ``names`` written as its run.sh variable."""
    for key, variable in names.items():
        message = re.sub(rf"\b{re.escape(key)}\b", variable, message)
    return message


def main(argv: Optional[Sequence[str]] = None) -> int:
    head, runs = split_runs(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m processor.section_check", description=describe(__doc__))
    parser.add_argument("--section", required=True, help="the section's name, for the messages")
    parser.add_argument("--as", dest="names", action="append", default=[], metavar="KEY=VARIABLE")
    args = parser.parse_args(head)
    names = dict(pair.split("=", 1) for pair in args.names)
    try:
        raise_all([check for run in runs for check in run_checks(run)])
    except UserError as error:
        problems = getattr(error, "errors", [error])
        lines = "\n".join(f"  - {in_words(str(problem), names)}" for problem in problems)
        sys.stderr.write(
            f"run.sh {args.section}: {len(problems)} problem(s) in the section's {len(runs)} run(s), "
            f"found before any starts:\n{lines}\n"
        )
        return USER_ERROR_STATUS
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
