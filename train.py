"""Train FMFA: ``python train.py --config configs/cuhk_pedes.yaml [key=value ...]``.

Several GPUs: ``torchrun --nproc_per_node=N train.py --config ...`` (gloo on the CPU).
The run folder gets config.yaml, train.log, metrics.jsonl, tensorboard/, last.pth, best.pth.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from configs.defaults import Config
from configs.errors import UserError
from configs.loader import build_parser, parse_args
from processor.preflight import check_device, check_run_inputs
from processor.processor import train
from utils.cli import describe, report_user_errors
from utils.distributed import cleanup, init_distributed, pick_device, record_errors
from utils.gpu import keep_off_the_gpus
from utils.io import save_config
from utils.logger import setup_logging
from utils.reproducibility import configure_kernels
from utils.run_folder import CONFIG_FILE, METRICS_FILE, plan_start, prepare_run_folder, resolve_output_dir
from utils.run_summary import summary_table

logger = logging.getLogger("train")


def report_finished(cfg: Config, output_dir: Path, epoch: int) -> None:
    """A rerun of a finished run: its result, nothing trained or written."""
    setup_logging()
    logger.info(
        "run folder %s already finished (%d/%d epochs); nothing to train. %s, text-to-image\n%s",
        output_dir,
        epoch,
        cfg.solver.epochs,
        cfg.data.dataset,
        summary_table(output_dir / METRICS_FILE, cfg.data.dataset, cfg.eval.split),
    )


@record_errors  # under torchrun: the failing rank's traceback goes into torchrun's error report
@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    cfg, _ = parse_args(argv, build_parser(describe(__doc__)))
    if cfg.train.device == "cpu":
        keep_off_the_gpus()
    check_run_inputs(cfg)  # before any folder is made or annotation read
    check_device(cfg, pick_device(cfg.train.device))
    info = init_distributed(cfg.train.device, cfg.train.dist_timeout_minutes)
    try:
        output_dir = resolve_output_dir(cfg, info)
        plan = plan_start(cfg, output_dir)  # every rank reads the same folder
        if plan.finished:
            if info.is_main:
                report_finished(cfg, output_dir, plan.epoch)
            return 0
        if info.is_main:
            prepare_run_folder(output_dir)
        setup_logging(output_dir, info.rank)
        if info.is_main:
            save_config(cfg, output_dir / CONFIG_FILE)
            logger.info("run folder %s, %d process(es) on %s", output_dir, info.world_size, info.device)
        configure_kernels(cfg.train.deterministic, cfg.train.tf32)
        best = train(cfg, info, output_dir, plan.resume_from)
        logger.info("best t2i R1 %.3f at epoch %d", best["R1"], best["epoch"])
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
    sys.exit(main())
