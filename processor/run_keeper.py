"""A run's folder over the run's life, behind the one object the training loop calls.

:class:`RunKeeper` makes the start decision before anything is built or written (a fresh run,
a continuation from last.pth, a finished run reported, or a refusal: a folder of another
config is never continued or overwritten by an automatic resume), prepares the folder, hands
the training its saved state to restore, writes ``last.pth`` and ``best.pth`` (what they hold:
``processor.checkpointing``), ``progress.json`` and ``metrics.jsonl``, owns the TensorBoard
writer, decides the best epoch and writes the closing summary. The best epoch is decided here
only: last.pth and progress.json record it, and the summary and ``python -m utils.report`` read it.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from torch.utils.tensorboard import SummaryWriter

from configs.defaults import Config
from configs.errors import ConfigError, UserError
from configs.loader import config_differences, config_to_dict, load_config
from datasets.build import EvalLoaders
from model.weights_file import load_weights_file
from processor import checkpointing as ckpt
from processor.checkpointing import TrainingParts
from utils.distributed import DistInfo, broadcast_object, elastic_job_id, restart_attempt
from utils.io import append_jsonl, drop_metrics_after, save_atomic, save_config, write_text_atomic
from utils.logger import setup_logging
from utils.metrics import format_table
from utils.run_folder import (
    BEST,
    CONFIG_FILE,
    LAST,
    METRICS_FILE,
    PROGRESS_FILE,
    SELECTION_METRIC,
    SELECTION_TASK,
    TENSORBOARD_DIR,
    WHERE_KEYS,
    read_metrics_rows,
    read_progress,
)

logger = logging.getLogger(__name__)


class RunFolderError(UserError, RuntimeError):
    """The run folder cannot hold the run (not writable, too little space, already holds one)
    or holds nothing to resume."""


@dataclass
class StartPlan:
    resume_from: Optional[Path] = None  # last.pth to continue from; None = a fresh run
    finished: bool = False  # every epoch is done: nothing to train
    epoch: int = 0  # epochs completed so far
    # The differences from the saved config when the decision compared them (an automatic
    # resume: none, or it is refused); None = not compared here (a fresh run, or train.resume,
    # whose resume compares the config last.pth was saved with).
    config_differences: Optional[List[str]] = None
    best: Optional[Dict[str, Any]] = None  # progress.json's best epoch, when the folder has one


def resolve_output_dir(cfg: Config, info: DistInfo) -> Path:
    """train.output_dir; else the folder being resumed; else runs/<dataset>/<time>_<name>
    (under torchrun with the job's id appended, so that a restart finds the folder its first
    attempt made). Rank 0 decides (the time stamp) and tells the other ranks."""
    if cfg.train.output_dir:
        folder = cfg.train.output_dir
    elif cfg.train.resume:
        resume = Path(cfg.train.resume)
        folder = str(resume if resume.is_dir() else resume.parent)
    else:
        parent, job = Path("runs") / cfg.data.dataset, elastic_job_id()
        suffix = f"_{cfg.train.name}" + (f"_{job}" if job else "")
        earlier = sorted(parent.glob(f"*{suffix}")) if job and restart_attempt() > 0 else []
        folder = str(earlier[-1] if earlier else parent / f"{time.strftime('%Y%m%d_%H%M%S')}{suffix}")
    return Path(broadcast_object(folder, info))


def run_config_differences(saved: Dict[str, Any], cfg: Config) -> List[str]:
    """``key: saved -> now`` for each config value other than WHERE_KEYS."""
    return [line for line in config_differences(saved, config_to_dict(cfg)) if line.split(":")[0] not in WHERE_KEYS]


def saved_config_differences(cfg: Config, output_dir: Path) -> List[str]:
    """The differences from the run folder's config.yaml; [] when there is none to compare with."""
    saved_file = output_dir / CONFIG_FILE
    if not saved_file.is_file():
        return []
    try:
        saved = config_to_dict(load_config(saved_file, check=False))
    except ConfigError as error:
        return [f"{saved_file} cannot be read ({error})"]
    return run_config_differences(saved, cfg)


def plan_start(cfg: Config, output_dir: Path) -> StartPlan:
    """train.resume (``path`` itself, or ``path/last.pth`` for a run folder); else continue the
    folder's own last.pth when train.auto_resume is set or torchrun restarted the job (refused
    if the folder was made with another config; a finished run is reported, not trained
    again); else a fresh run, refused when the folder already holds one."""
    if cfg.train.resume:
        path = Path(cfg.train.resume)
        candidate = path / LAST if path.is_dir() else path
        if not candidate.is_file():
            raise RunFolderError(
                f"cannot resume: {candidate} not found (give a run folder holding {LAST} or the checkpoint file)"
            )
        return StartPlan(candidate)
    if not (output_dir / LAST).is_file():
        return StartPlan()
    if not (cfg.train.auto_resume or restart_attempt() > 0):
        raise RunFolderError(
            f"run folder {output_dir} already holds a run ({LAST}); continue it with train.auto_resume=true "
            f"(or train.resume={output_dir}), or choose another train.output_dir"
        )
    changed = saved_config_differences(cfg, output_dir)
    if changed:
        raise RunFolderError(
            f"run folder {output_dir} holds a run of another config; it is neither continued nor overwritten. "
            f"Differences (saved -> now): {'; '.join(changed)}. Choose another train.output_dir, or continue it "
            f"explicitly with train.resume={output_dir}"
        )
    progress = read_progress(output_dir)
    done = int(progress.get("epoch", 0))
    return StartPlan(output_dir / LAST, done >= cfg.solver.epochs, done, [], progress.get("best"))


class RunKeeper:
    """A run's folder, its start plan, best epoch and TensorBoard writer. Made on every rank
    (each reads the same folder); only rank 0 writes files."""

    def __init__(self, cfg: Config, info: DistInfo):
        self.cfg, self.info = cfg, info
        self.folder = resolve_output_dir(cfg, info)
        self.plan = plan_start(cfg, self.folder)
        self.best: Dict[str, Any] = dict(self.plan.best or {SELECTION_METRIC: -math.inf, "epoch": 0})
        self.writer: Optional[SummaryWriter] = None  # opened by begin, after a resume

    @property
    def finished(self) -> bool:
        """Every epoch is already done: nothing to train or write."""
        return self.plan.finished

    def prepare(self) -> None:
        """Rank 0 makes the folder and proves it writable with a probe file, before anything
        heavy starts; every rank logs to its train.log. config.yaml waits for ``begin``."""
        if self.info.is_main:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(dir=self.folder, prefix=".write_probe"):
                    pass
            except OSError as error:
                raise RunFolderError(
                    f"run folder {self.folder} is not writable ({error.strerror or error}); "
                    "fix its permissions or choose another train.output_dir"
                ) from None
        setup_logging(self.folder, self.info.rank)

    def check_space(self, model) -> None:
        """Rank 0: room on the disk for the checkpoints of ``model``."""
        if not self.info.is_main:
            return
        needed, free = ckpt.checkpoint_bytes_needed(model, self.folder), shutil.disk_usage(self.folder).free
        if free < needed:
            raise RunFolderError(
                f"run folder {self.folder}: {free / 2**30:.2f} GiB free, but its checkpoints need about "
                f"{needed / 2**30:.2f} GiB ({LAST}, its temporary copy while written, {BEST}); "
                "free some space or choose another train.output_dir"
            )

    def saved_state(self) -> Optional[Tuple[Dict[str, Any], str, str]]:
        """The planned last.pth to continue from (None for a fresh run), as ``(state, source,
        hint)`` for ``TrainingParts.restore``; its best epoch becomes the run's."""
        file = self.plan.resume_from
        if file is None:
            return None
        state = ckpt.load_training_state(file)
        changed = self.plan.config_differences
        if changed is None:
            changed = run_config_differences(state.get("config", {}), self.cfg)
        if changed:
            logger.warning(
                "resuming %s with a config that differs from the saved one:\n  %s", file, "\n  ".join(changed)
            )
        self.best = dict(state["best"])
        hint = "; the run was saved with a different config:\n  " + "\n  ".join(changed) if changed else ""
        return state, str(file), hint

    def begin(self, epoch: int, step: int, batches: int = 0) -> None:
        """Training starts after ``epoch`` epochs and ``step`` steps (``batches`` of them
        inside the next epoch): rank 0 writes the resolved config.yaml (only now, once a resumed
        run's parts took their last.pth, so a resume refused on the way leaves the folder's
        config as it was); a resumed run's later metrics.jsonl rows dropped (they are evaluated
        again); rank 0's TensorBoard writer opened (purge_step: a resumed run overwrites curves
        past its checkpoint)."""
        if self.info.is_main:
            save_config(self.cfg, self.folder / CONFIG_FILE)
        if self.plan.resume_from is not None:
            if self.info.is_main:
                drop_metrics_after(self.folder / METRICS_FILE, epoch)
            best = self.best[SELECTION_METRIC]
            inside = f", {batches} batches into epoch {epoch + 1}" if batches else ""
            logger.info(
                "resumed from %s after epoch %d (step %d%s, best %s %.3f)",
                *(self.plan.resume_from, epoch, step, inside, SELECTION_METRIC, best),
            )
        if self.info.is_main:
            self.writer = SummaryWriter(str(self.folder / TENSORBOARD_DIR), purge_step=step or None)

    def scalars(self, values: Dict[str, float], step: int) -> None:
        """TensorBoard scalars (tag -> value) at ``step``; nothing on other ranks."""
        if self.writer is not None:
            for tag, value in values.items():
                self.writer.add_scalar(tag, value, step)

    def record(self, epoch: int, loaders: EvalLoaders, results: Dict[str, Dict[str, float]]) -> None:
        """One evaluation's rows in metrics.jsonl and TensorBoard."""
        for task, values in results.items():
            append_jsonl(
                self.folder / METRICS_FILE,
                {"epoch": epoch, "dataset": loaders.dataset, "split": loaders.split, "task": task, **values},
            )
            self.scalars({f"{loaders.dataset}/{loaders.split}/{task}/{name}": v for name, v in values.items()}, epoch)

    def update_best(self, epoch: int, metrics: Dict[str, float]) -> Optional[Dict[str, float]]:
        """``metrics`` when they beat the best epoch so far (which ``epoch`` then becomes; the
        earliest stays on ties), else None."""
        if metrics[SELECTION_METRIC] > self.best[SELECTION_METRIC]:
            self.best = {SELECTION_METRIC: metrics[SELECTION_METRIC], "epoch": epoch}
            return metrics
        return None

    def save(self, parts: TrainingParts, best_metrics: Optional[Dict[str, float]]) -> None:
        """Rank 0 after an epoch (or inside one, ``parts.inside``): best.pth when ``best_metrics``
        are new, then last.pth and progress.json."""
        config = config_to_dict(self.cfg)
        if best_metrics is not None:
            save_atomic(ckpt.best_state(parts, best_metrics, config), self.folder / BEST)
        save_atomic(ckpt.training_state(parts, self.best, config), self.folder / LAST)
        progress = {"epoch": parts.epoch, "epochs": self.cfg.solver.epochs, "best": self.best}
        write_text_atomic(self.folder / PROGRESS_FILE, json.dumps(progress))

    def best_weights(self) -> Dict[str, Any]:
        """The content of best.pth."""
        return load_weights_file(self.folder / BEST)

    def summary(self) -> str:
        """The starting weights' (epoch 0, when evaluated), best and final t2i rows of
        metrics.jsonl on the run's dataset and split; with selection on val, best.pth's test rows too."""
        dataset, split = self.cfg.data.dataset, self.cfg.eval.split
        rows = read_metrics_rows(self.folder / METRICS_FILE)
        rows = [r for r in rows if (r["dataset"], r["task"]) == (dataset, SELECTION_TASK)]
        selection = [r for r in rows if r["split"] == split]
        if not selection:
            return "(no evaluation)"
        best = [r for r in selection if r["epoch"] == self.best["epoch"] > 0] or selection[-1:]
        picked = [(self.starting_weights(), selection[0])] if selection[0]["epoch"] == 0 else []
        picked += [
            (f"best (epoch {best[-1]['epoch']}, {split})", best[-1]),
            (f"final (epoch {selection[-1]['epoch']}, {split})", selection[-1]),
        ]
        if split != "test":
            picked += [(f"best.pth on test (epoch {r['epoch']})", r) for r in rows if r["split"] == "test"][-1:]
        return format_table([{**row, "task": label} for label, row in picked])

    def starting_weights(self) -> str:
        """The label of epoch 0's row: which weights the run started from, "untrained" only
        for random ones."""
        model = self.cfg.model
        if model.init_from:
            return f"before training (model.init_from={model.init_from})"
        if model.pretrain != "none":
            return f"before training (model.pretrain={model.pretrain})"
        return "untrained"

    def close(self) -> None:
        """The writer closed; rank 0 logs the closing summary."""
        if self.writer is not None:
            self.writer.close()
        if self.info.is_main:
            logger.info("%s, text-to-image\n%s", self.cfg.data.dataset, self.summary())
