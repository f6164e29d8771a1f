"""A training run: its parts built (restored from last.pth when resumed), the loop over epochs
(one epoch: ``processor.epoch_loop``) and evaluation. Everything the run keeps in its folder
(checkpoints, progress, metrics, TensorBoard, the best epoch, the summary) goes through its
``processor.run_keeper.RunKeeper``."""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader

from configs.defaults import Config
from configs.errors import ConfigError
from datasets.build import EvalLoaders, build_eval_loaders, build_train_loader, read_dataset
from datasets.readers import log_statistics
from model.build import build_criterion, build_model
from processor.checkpointing import TrainingParts, restore_rng_state
from processor.epoch_loop import EpochPosition, EpochReport, Stepper, train_one_epoch
from processor.evaluator import eval_targets, evaluate, results_table
from processor.precision import Precision
from processor.run_info import log_run_start, memory_figures, take_gpu_peak_mb
from processor.run_keeper import RunKeeper
from solver import build_lr_scheduler, build_optimizer
from utils.distributed import DistInfo, barrier, data_parallel, loss_collective
from utils.run_folder import SELECTION_TASK

logger = logging.getLogger(__name__)


class StartedLoader:
    """``loader`` whose iteration, once started, puts the generators back to ``rng``: starting
    a DataLoader draws its workers' base seed from the CPU generator, a draw the interrupted
    run made at the epoch's start, before the state a checkpoint inside the epoch saved."""

    def __init__(self, loader: DataLoader, rng: Dict[str, Any], device: torch.device):
        self.loader, self.rng, self.device = loader, rng, device

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        batches = iter(self.loader)
        restore_rng_state(self.rng, self.device)
        yield from batches


class Training:
    """The parts of a run (data, model, loss, optimizer, schedule, precision), restored from the
    keeper's last.pth when it continues one, and its epoch loop; ``run`` trains the remaining epochs."""

    def __init__(self, cfg: Config, info: DistInfo, keeper: RunKeeper):
        self.cfg, self.info, self.keeper = cfg, info, keeper
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        self.precision = Precision(cfg.train.precision, info.device)
        if info.is_main:
            log_statistics([read_dataset(cfg.data.root, cfg.data.dataset)])
        self.loader, num_classes = build_train_loader(cfg, info.rank, info.world_size)
        model = self.precision.prepare_model(build_model(cfg, num_classes)).to(info.device)
        criterion = build_criterion(cfg, loss_collective(info, cfg.train.global_batch_losses))
        keeper.check_space(model)
        if info.is_main:
            log_run_start(model, info.device)
        train_model = data_parallel(model, info)
        if cfg.train.compile:
            train_model = torch.compile(train_model)
        optimizer = build_optimizer(model, cfg.solver)
        scheduler = build_lr_scheduler(optimizer, cfg.solver)
        scaler = self.precision.make_scaler()
        self.parts = TrainingParts(model, optimizer, scheduler, scaler, num_classes, info.device)
        self.stepper = Stepper(train_model, criterion, optimizer, self.precision, scaler)
        self.targets = eval_targets(cfg) if info.is_main else []
        saved = keeper.saved_state()
        if saved is not None:
            self.parts.restore(*saved)
        self.resume_rng = saved[0]["rng"] if saved is not None and self.parts.inside else None
        if self.parts.inside:
            self.check_layout(self.parts.inside["layout"])

    def layout(self) -> Dict[str, Any]:
        """What a position inside an epoch depends on: the global batch, and for the shards'
        stream (whose workers read contiguous blocks) its split, the ranks and loader workers."""
        layout = {"data.batch_size": self.cfg.data.batch_size}
        if self.cfg.data.shards:
            layout.update(
                {
                    "processes": self.info.world_size,
                    "data.num_workers": self.loader.num_workers,
                    "data.shard_split": self.cfg.data.shard_split,
                }
            )
        return layout

    def check_layout(self, saved: Dict[str, Any]) -> None:
        now = self.layout()
        if saved != now:
            raise ConfigError(
                f"{self.keeper.plan.resume_from} was saved inside epoch {self.parts.epoch + 1} "
                f"({self.parts.inside['batches']} batches) with {saved}; this run has {now}: "
                "resume it with the same to continue at the same sample"
            )

    def epoch_start(self) -> Tuple[Any, Optional[EpochPosition]]:
        """The loader set to the next epoch (past the batches a resumed epoch trained) and that position."""
        inside, sampler = self.parts.inside, self.loader.sampler
        sampler.set_epoch(self.parts.epoch)
        sampler.skip_batches(inside["batches"] if inside else 0, self.loader.batch_size)
        if not inside:
            return self.loader, None
        return StartedLoader(self.loader, self.resume_rng, self.info.device), EpochPosition(
            **{k: inside[k] for k in ("batches", "logs")}
        )

    def save_inside(self, step: int, position: EpochPosition) -> None:
        """Rank 0, every train.checkpoint_every_steps steps inside an epoch: last.pth and progress.json."""
        self.parts.step = step
        self.parts.inside = {"batches": position.batches, "logs": position.logs, "layout": self.layout()}
        self.keeper.save(self.parts, None)
        self.parts.inside = None

    def evaluate(self, epoch: int, targets: Optional[List[EvalLoaders]] = None) -> Dict[str, float]:
        """Evaluate every target (default: the run's); log and record each; return the first's t2i."""
        first: Dict[str, float] = {}
        for loaders in self.targets if targets is None else targets:
            results = evaluate(
                self.parts.model, loaders, self.precision.device, self.precision.autocast(), self.cfg.eval
            )
            logger.info("epoch %d, %s %s\n%s", epoch, loaders.dataset, loaders.split, results_table(results))
            self.keeper.record(epoch, loaders, results)
            first = first or results[SELECTION_TASK]
        return first

    def finish_epoch(self, averages: Dict[str, float]) -> None:
        """Rank 0 after each epoch: log losses and memory, evaluate when due, write checkpoints."""
        cfg, epoch, best_metrics = self.cfg, self.parts.epoch, None
        self.log_memory("train", ", ".join(f"{k} {v:.4f}" for k, v in averages.items()))
        if epoch % cfg.train.eval_period == 0 or epoch == cfg.solver.epochs:
            metrics = self.evaluate(epoch)
            self.log_memory("eval")
            best_metrics = self.keeper.update_best(epoch, metrics)
        self.keeper.save(self.parts, best_metrics)

    def log_memory(self, phase: str, losses: str = "") -> None:
        """The memory figures of the phase just ended (``train``: this epoch's steps; ``eval``: its
        evaluation), in the log and TensorBoard."""
        epoch = self.parts.epoch
        memory = memory_figures(self.info.device, phase)
        figures = ", ".join(f"{k} {v:.0f}" for k, v in memory.items())
        if phase == "train":
            logger.info("epoch %d/%d: %s; memory %s", epoch, self.cfg.solver.epochs, losses, figures)
        else:
            logger.info("epoch %d %s memory %s", epoch, phase, figures)
        kept = {f"memory/{name}": value for name, value in memory.items() if phase == "train" or name != "rss_mb"}
        self.keeper.scalars(kept, epoch)

    def run(self) -> Dict[str, Any]:
        """Train the remaining epochs; the best epoch (``{"R1", "epoch"}``) at the end."""
        cfg, info, parts, keeper = self.cfg, self.info, self.parts, self.keeper
        keeper.begin(parts.epoch, parts.step, parts.inside["batches"] if parts.inside else 0)
        if cfg.eval.at_start and parts.epoch == 0 and not parts.inside and info.is_main:
            self.evaluate(0)
            take_gpu_peak_mb(info.device)  # epoch 1's training peak starts here
        barrier(info)
        report = EpochReport(
            cfg.train.log_period,
            keeper.scalars,
            info.is_main,
            cfg.solver.epochs,
            info.world_size,
            checkpoint_every=cfg.train.checkpoint_every_steps,
            checkpoint=self.save_inside if info.is_main else None,
        )
        while parts.epoch < cfg.solver.epochs:
            loader, position = self.epoch_start()
            parts.step, averages = train_one_epoch(self.stepper, loader, parts.epoch, parts.step, report, position)
            parts.inside = None
            parts.epoch += 1
            parts.scheduler.step()
            if info.is_main:
                self.finish_epoch(averages)
            barrier(info)
        if info.is_main and cfg.eval.split != "test" and keeper.best["epoch"] > 0:
            self.evaluate_best_on_test()
        keeper.close()
        return keeper.best

    def evaluate_best_on_test(self) -> None:
        """A run selected on val: its best.pth on the test split too (rows at the best epoch)."""
        best = self.keeper.best_weights()
        self.parts.model.load_state_dict(best["model"])
        test = build_eval_loaders(self.cfg, self.cfg.data.dataset, "test")
        logger.info("best.pth (epoch %d, selected on %s) on the test split", best["epoch"], self.cfg.eval.split)
        self.evaluate(best["epoch"], [test])
