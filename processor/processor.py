"""A whole training run: set-up, the epoch loop, evaluation, checkpoints and logs."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch.utils.tensorboard import SummaryWriter

from configs.defaults import Config
from configs.loader import config_to_dict
from datasets.build import EvalLoaders, build_eval_loaders, build_train_loader, read_dataset
from datasets.readers import log_statistics
from model.build import build_criterion, build_model
from model.checkpoint import load_weights_file
from processor import checkpointing as ckpt
from processor.evaluator import eval_targets, evaluate, results_table
from processor.precision import Precision
from processor.trainer import train_one_epoch
from solver import build_lr_scheduler, build_optimizer
from utils.distributed import DistInfo, barrier, data_parallel
from utils.io import append_jsonl, drop_metrics_after, save_atomic
from utils.memory import memory_figures, take_gpu_peak_mb
from utils.run_folder import (
    BEST,
    LAST,
    METRICS_FILE,
    TENSORBOARD_DIR,
    check_free_space,
    find_resume_file,
    run_config_differences,
    write_progress,
)
from utils.run_info import log_run_start
from utils.run_summary import summary_table

logger = logging.getLogger(__name__)


def run_evaluation(
    model,
    targets: List[EvalLoaders],
    cfg: Config,
    precision: Precision,
    epoch: int,
    output_dir: Path,
    writer: Optional[SummaryWriter],
) -> Dict[str, float]:
    """Evaluate every target; log, write metrics.jsonl and TensorBoard; return the first's t2i."""
    first = {}
    for loaders in targets:
        results = evaluate(model, loaders, precision.device, precision.autocast(), cfg.eval.i2t, cfg.eval.query_chunk)
        logger.info("epoch %d, %s %s\n%s", epoch, loaders.dataset, loaders.split, results_table(results))
        for task, values in results.items():
            append_jsonl(
                output_dir / METRICS_FILE,
                {"epoch": epoch, "dataset": loaders.dataset, "split": loaders.split, "task": task, **values},
            )
            if writer is not None:
                for name, value in values.items():
                    writer.add_scalar(f"{loaders.dataset}/{loaders.split}/{task}/{name}", value, epoch)
        first = first or results["t2i"]
    return first


class Run:
    """Everything a training run holds; ``train`` runs the remaining epochs."""

    def __init__(self, cfg: Config, info: DistInfo, output_dir: Path):
        self.cfg, self.info, self.output_dir = cfg, info, output_dir
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        self.precision = Precision(cfg.train.precision, info.device)
        if info.is_main:
            log_statistics([read_dataset(cfg.data.root, cfg.data.dataset)])
        self.loader, self.num_classes = build_train_loader(cfg, info.rank, info.world_size)
        model = self.precision.prepare_model(build_model(cfg, self.num_classes)).to(info.device)
        self.model = model
        self.criterion = build_criterion(cfg)
        if info.is_main:
            check_free_space(output_dir, ckpt.checkpoint_bytes_needed(model, output_dir))
            log_run_start(model, info.device)
        self.train_model = data_parallel(model, self.criterion, info, cfg.train.global_batch_losses)
        if cfg.train.compile:
            self.train_model = torch.compile(self.train_model)
        self.optimizer = build_optimizer(model, cfg.solver)
        self.scheduler = build_lr_scheduler(self.optimizer, cfg.solver)
        self.scaler = self.precision.make_scaler()
        self.epoch, self.step = 0, 0
        self.best: Dict[str, float] = {"R1": -math.inf, "epoch": 0}
        self.targets = eval_targets(cfg) if info.is_main else []
        self.writer: Optional[SummaryWriter] = None  # opened by train(), after a resume

    def resume(self, path: str | Path) -> None:
        file = find_resume_file(path)
        state = ckpt.load_training_state(file)
        changed = run_config_differences(state.get("config", {}), self.cfg)
        if changed:
            logger.warning(
                "resuming %s with a config that differs from the saved one:\n  %s", file, "\n  ".join(changed)
            )
        hint = "; the run was saved with a different config:\n  " + "\n  ".join(changed) if changed else ""
        ckpt.restore_training_state(
            state, self.model, self.optimizer, self.scheduler, self.scaler, self.info.device, str(file), hint
        )
        self.epoch, self.step, self.best = state["epoch"], state["step"], dict(state["best"])
        if self.info.is_main:
            drop_metrics_after(self.output_dir / METRICS_FILE, self.epoch)
        logger.info(
            "resumed from %s after epoch %d (step %d, best R1 %.3f)", file, self.epoch, self.step, self.best["R1"]
        )

    def evaluate(self, epoch: int) -> Dict[str, float]:
        return run_evaluation(self.model, self.targets, self.cfg, self.precision, epoch, self.output_dir, self.writer)

    def save(self, best_metrics: Optional[Dict[str, float]]) -> None:
        config = config_to_dict(self.cfg)
        if best_metrics is not None:
            save_atomic(
                ckpt.best_state(self.model, self.epoch, best_metrics, config, self.num_classes), self.output_dir / BEST
            )
        save_atomic(
            ckpt.training_state(
                self.model,
                self.optimizer,
                self.scheduler,
                self.scaler,
                self.epoch,
                self.step,
                self.best,
                config,
                self.num_classes,
                self.info.device,
            ),
            self.output_dir / LAST,
        )
        write_progress(self.output_dir, self.epoch, self.cfg.solver.epochs, self.best)

    def finish_epoch(self, averages: Dict[str, float]) -> None:
        """Rank 0 after each epoch: log losses and memory, evaluate when due, write checkpoints."""
        cfg, best_metrics = self.cfg, None
        self.log_memory("train", ", ".join(f"{k} {v:.4f}" for k, v in averages.items()))
        if self.epoch % cfg.train.eval_period == 0 or self.epoch == cfg.solver.epochs:
            metrics = self.evaluate(self.epoch)
            self.log_memory("eval")
            if metrics["R1"] > self.best["R1"]:
                self.best, best_metrics = {"R1": metrics["R1"], "epoch": self.epoch}, metrics
        self.save(best_metrics)

    def log_memory(self, phase: str, losses: str = "") -> None:
        """The memory figures of the phase just ended (``train``: this epoch's steps; ``eval``: its
        evaluation), in the log and TensorBoard."""
        memory = memory_figures(self.info.device, phase)
        figures = ", ".join(f"{k} {v:.0f}" for k, v in memory.items())
        if phase == "train":
            logger.info("epoch %d/%d: %s; memory %s", self.epoch, self.cfg.solver.epochs, losses, figures)
        else:
            logger.info("epoch %d %s memory %s", self.epoch, phase, figures)
        for name, value in memory.items():
            if self.writer is not None and (phase == "train" or name != "rss_mb"):
                self.writer.add_scalar(f"memory/{name}", value, self.epoch)

    def train(self, evaluate_first: bool = False) -> Dict[str, float]:
        cfg = self.cfg
        if self.info.is_main:  # purge_step: a resumed run overwrites curves past its checkpoint
            self.writer = SummaryWriter(str(self.output_dir / TENSORBOARD_DIR), purge_step=self.step or None)
        if evaluate_first and self.epoch == 0 and self.info.is_main:
            self.evaluate(0)
            take_gpu_peak_mb(self.info.device)  # epoch 1's training peak starts here
        barrier(self.info)
        while self.epoch < cfg.solver.epochs:
            self.loader.sampler.set_epoch(self.epoch)
            self.step, averages = train_one_epoch(
                self.train_model,
                self.criterion,
                self.loader,
                self.optimizer,
                self.precision,
                self.scaler,
                self.epoch,
                self.step,
                cfg.train.log_period,
                self.writer,
                progress=self.info.is_main,
                epochs=cfg.solver.epochs,
                processes=self.info.world_size,
            )
            self.epoch += 1
            self.scheduler.step()
            if self.info.is_main:
                self.finish_epoch(averages)
            barrier(self.info)
        if self.info.is_main and cfg.eval.split != "test" and self.best["epoch"] > 0:
            self.evaluate_best_on_test()
        if self.writer is not None:
            self.writer.close()
        if self.info.is_main:
            logger.info(
                "%s, text-to-image\n%s",
                cfg.data.dataset,
                summary_table(self.output_dir / METRICS_FILE, cfg.data.dataset, cfg.eval.split),
            )
        return self.best

    def evaluate_best_on_test(self) -> None:
        """A run selected on val: its best.pth on the test split too (rows at the best epoch)."""
        best = load_weights_file(self.output_dir / BEST)
        self.model.load_state_dict(best["model"])
        test = build_eval_loaders(self.cfg, self.cfg.data.dataset, "test")
        logger.info("best.pth (epoch %d, selected on %s) on the test split", best["epoch"], self.cfg.eval.split)
        run_evaluation(self.model, [test], self.cfg, self.precision, best["epoch"], self.output_dir, self.writer)


def train(cfg: Config, info: DistInfo, output_dir: Path, resume_from: str = "") -> Dict[str, float]:
    """Build a run in ``output_dir``, resume it from ``resume_from`` when given (see
    ``utils.run_folder.plan_start``), and train to the last epoch."""
    run = Run(cfg, info, output_dir)
    if resume_from:
        run.resume(resume_from)
    return run.train(evaluate_first=cfg.eval.at_start)
