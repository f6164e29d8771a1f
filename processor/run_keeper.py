"""The one owner of a run's folder over the run's life, the object the training loop calls.

It chooses the folder and makes the start decision (fresh, resume, finished or refused: the
rules are ``utils.run_folder``'s), prepares the folder, writes and reads ``last.pth`` and
``best.pth`` (their contents: ``processor.checkpointing``), keeps ``progress.json``,
``metrics.jsonl`` and TensorBoard, tracks the best epoch and writes the closing summary.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Dict, Optional

from torch.utils.tensorboard import SummaryWriter

from configs.defaults import Config
from configs.loader import config_to_dict
from datasets.build import EvalLoaders
from model.weights_file import load_weights_file
from processor import checkpointing as ckpt
from processor.checkpointing import TrainingParts
from utils.distributed import DistInfo
from utils.io import append_jsonl, drop_metrics_after, save_atomic, save_config
from utils.logger import setup_logging
from utils.metric_names import SELECTION_METRIC
from utils.run_folder import (
    check_free_space,
    plan_start,
    prepare_run_folder,
    resolve_output_dir,
    run_config_differences,
    write_progress,
)
from utils.run_layout import BEST, CONFIG_FILE, LAST, METRICS_FILE, TENSORBOARD_DIR
from utils.run_summary import summary_table

logger = logging.getLogger(__name__)


class RunKeeper:
    """A run's folder, its start plan, best epoch and TensorBoard writer. Made on every rank
    (each reads the same folder); only rank 0 writes files."""

    def __init__(self, cfg: Config, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.folder = resolve_output_dir(cfg, info)
        self.plan = plan_start(cfg, self.folder)
        self.best: Dict[str, Any] = {SELECTION_METRIC: -math.inf, "epoch": 0}
        self.writer: Optional[SummaryWriter] = None  # opened by open_writer, after a resume

    @property
    def finished(self) -> bool:
        """Every epoch is already done: nothing to train or write."""
        return self.plan.finished

    def prepare(self) -> None:
        """Rank 0 makes the folder (proved writable); every rank logs to its train.log; rank 0
        writes the resolved config.yaml."""
        if self.info.is_main:
            prepare_run_folder(self.folder)
        setup_logging(self.folder, self.info.rank)
        if self.info.is_main:
            save_config(self.cfg, self.folder / CONFIG_FILE)

    def check_space(self, model) -> None:
        """Rank 0: room on the disk for the checkpoints of ``model``."""
        if self.info.is_main:
            check_free_space(self.folder, ckpt.checkpoint_bytes_needed(model, self.folder))

    def resume(self, parts: TrainingParts) -> None:
        """Continue from the planned last.pth, if any: ``parts`` as saved, the best epoch, and
        metrics.jsonl cut back to the saved epoch."""
        file = self.plan.resume_from
        if file is None:
            return
        state = ckpt.load_training_state(file)
        changed = self.plan.config_differences
        if changed is None:
            changed = run_config_differences(state.get("config", {}), self.cfg)
        if changed:
            logger.warning(
                "resuming %s with a config that differs from the saved one:\n  %s", file, "\n  ".join(changed)
            )
        hint = "; the run was saved with a different config:\n  " + "\n  ".join(changed) if changed else ""
        ckpt.restore_training_state(state, parts, str(file), hint)
        self.best = dict(state["best"])
        if self.info.is_main:
            drop_metrics_after(self.folder / METRICS_FILE, parts.epoch)
        logger.info(
            "resumed from %s after epoch %d (step %d, best %s %.3f)",
            file,
            parts.epoch,
            parts.step,
            SELECTION_METRIC,
            self.best[SELECTION_METRIC],
        )

    def open_writer(self, step: int) -> None:
        """Rank 0's TensorBoard writer; purge_step: a resumed run overwrites curves past its checkpoint."""
        if self.info.is_main:
            self.writer = SummaryWriter(str(self.folder / TENSORBOARD_DIR), purge_step=step or None)

    def record(self, epoch: int, loaders: EvalLoaders, results: Dict[str, Dict[str, float]]) -> None:
        """One evaluation's rows in metrics.jsonl and TensorBoard."""
        for task, values in results.items():
            append_jsonl(
                self.folder / METRICS_FILE,
                {"epoch": epoch, "dataset": loaders.dataset, "split": loaders.split, "task": task, **values},
            )
            if self.writer is not None:
                for name, value in values.items():
                    self.writer.add_scalar(f"{loaders.dataset}/{loaders.split}/{task}/{name}", value, epoch)

    def update_best(self, epoch: int, metrics: Dict[str, float]) -> Optional[Dict[str, float]]:
        """``metrics`` when they beat the best epoch so far (which ``epoch`` then becomes), else None."""
        if metrics[SELECTION_METRIC] > self.best[SELECTION_METRIC]:
            self.best = {SELECTION_METRIC: metrics[SELECTION_METRIC], "epoch": epoch}
            return metrics
        return None

    def save(self, parts: TrainingParts, best_metrics: Optional[Dict[str, float]]) -> None:
        """Rank 0 after an epoch: best.pth when ``best_metrics`` are new, then last.pth and progress.json."""
        config = config_to_dict(self.cfg)
        if best_metrics is not None:
            save_atomic(ckpt.best_state(parts, best_metrics, config), self.folder / BEST)
        save_atomic(ckpt.training_state(parts, self.best, config), self.folder / LAST)
        write_progress(self.folder, parts.epoch, self.cfg.solver.epochs, self.best)

    def best_weights(self) -> Dict[str, Any]:
        """The content of best.pth."""
        return load_weights_file(self.folder / BEST)

    def summary(self) -> str:
        """The untrained, best and final text-to-image rows of metrics.jsonl, as a table."""
        return summary_table(self.folder / METRICS_FILE, self.cfg.data.dataset, self.cfg.eval.split)

    def close(self) -> None:
        """The writer closed; rank 0 logs the closing summary."""
        if self.writer is not None:
            self.writer.close()
        if self.info.is_main:
            logger.info("%s, text-to-image\n%s", self.cfg.data.dataset, self.summary())
