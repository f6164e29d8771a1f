"""Train FMFA: ``python train.py --config configs/cuhk_pedes.yaml [key=value ...]``.

Several GPUs: ``torchrun --nproc_per_node=N train.py --config ...`` (gloo on the CPU).
The run folder gets config.yaml, train.log, metrics.jsonl, tensorboard/, last.pth, best.pth.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

from configs.errors import UserError
from configs.loader import build_parser, parse_args
from processor.preflight import check_run_inputs
from processor.run_keeper import RunKeeper
from processor.training import Training
from utils.cli import describe, report_user_errors
from utils.distributed import cleanup, init_distributed, pick_device, record_errors
from utils.gpu import keep_off_the_gpus
from utils.logger import setup_logging
from utils.reproducibility import configure_kernels
from utils.run_folder import SELECTION_METRIC, SELECTION_TASK

logger = logging.getLogger("train")


def report_finished(run: RunKeeper) -> None:
    """A rerun of a finished run: its result, nothing trained or written."""
    setup_logging()
    logger.info(
        "run folder %s already finished (%d/%d epochs); nothing to train. %s, text-to-image\n%s",
        run.folder,
        run.plan.epoch,
        run.cfg.solver.epochs,
        run.cfg.data.dataset,
        run.summary(),
    )


@record_errors  # under torchrun: the failing rank's traceback goes into torchrun's error report
@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg, _ = parse_args(argv, build_parser(describe(__doc__)))
    if cfg.train.device == "cpu":
        keep_off_the_gpus()
    check_run_inputs(cfg, pick_device(cfg.train.device))  # every problem at once, before any folder is made
    info = init_distributed(cfg.train.device, cfg.train.dist_timeout_minutes)
    try:
        run = RunKeeper(cfg, info)  # the folder and the start decision; every rank reads the same folder
        if run.finished:
            if info.is_main:
                report_finished(run)
            return 0
        run.prepare()  # the folder made and train.log opened; config.yaml once training begins
        if info.is_main:
            logger.info("run folder %s, %d process(es) on %s", run.folder, info.world_size, info.device)
        configure_kernels(cfg.train.deterministic, cfg.train.tf32)
        best = Training(cfg, info, run).run()  # continues from last.pth when the plan says so
        logger.info(
            "best %s %s %.3f at epoch %d", SELECTION_TASK, SELECTION_METRIC, best[SELECTION_METRIC], best["epoch"]
        )
    except Exception as error:
        # Every rank logs its own failure (non-zero ranks append errors to the run's log);
        # torchrun then stops the other ranks and exits non-zero.
        if not isinstance(error, UserError) or info.distributed:
            logger.error("rank %d of %d failed: %s: %s", info.rank, info.world_size, type(error).__name__, error)
        raise
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
