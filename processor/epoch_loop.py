"""The training loop of one epoch: the optimisation step (:class:`Stepper`), device-side loss
sums and the non-finite guard; ``processor.training`` runs it once per epoch."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from processor.precision import Precision

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the message names the term and the step."""


@dataclass
class StepLog:
    """Device-side running sums of the loss terms and metrics between two log points, and
    the first step at which each term was non-finite (-1: none). Nothing here syncs the
    host with the device; ``flush`` does, once every ``log_period`` steps."""

    device: torch.device
    names: List[str] = field(default_factory=list)
    sums: Optional[torch.Tensor] = None
    first_bad: Optional[torch.Tensor] = None
    count: int = 0

    def add(self, step: int, terms: Dict[str, torch.Tensor], metrics: Dict[str, torch.Tensor]) -> None:
        if self.sums is None:
            self.names = [*terms, "loss", *metrics]
            self.sums = torch.zeros(len(self.names), dtype=torch.float64, device=self.device)
            self.first_bad = torch.full((len(terms) + 1,), -1, dtype=torch.long, device=self.device)
        values = torch.stack(
            [
                *(t.detach().float() for t in terms.values()),
                sum(terms.values()).detach().float(),
                *(m.float() for m in metrics.values()),
            ]
        )
        bad = ~torch.isfinite(values[: len(terms) + 1])
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)
        self.sums += values.double()
        self.count += 1

    def check_finite(self) -> None:
        if self.first_bad is None:
            return
        first_bad = self.first_bad.tolist()
        bad = [(step, name) for step, name in zip(first_bad, self.names) if step >= 0]
        if bad:
            step, name = min(bad)
            raise NonFiniteLossError(
                f"non-finite loss '{name}' at step {step}; training stopped (the last checkpoint written is intact)"
            )

    def flush(self) -> Dict[str, float]:
        """Averages since the last flush (after the non-finite check), then reset."""
        self.check_finite()
        if self.sums is None or not self.count:
            return {}
        averages = dict(zip(self.names, (self.sums / self.count).tolist()))
        self.sums.zero_()
        self.count = 0
        return averages

    def state(self) -> Dict[str, Any]:
        """The sums so far as plain values and CPU tensors (for a checkpoint inside an epoch)."""
        tensors = {k: None if v is None else v.cpu() for k, v in (("sums", self.sums), ("first_bad", self.first_bad))}
        return {"names": list(self.names), "count": self.count, **tensors}

    def load(self, state: Dict[str, Any]) -> None:
        """Continue from a :meth:`state`."""
        self.names, self.count = list(state["names"]), state["count"]
        for key in ("sums", "first_bad"):
            setattr(self, key, None if state[key] is None else state[key].to(self.device))


def move_batch(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


Criterion = Callable[
    [Dict[str, torch.Tensor], Dict[str, torch.Tensor]], Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]
]


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def log_line(
    epoch: int,
    epochs: int,
    done: int,
    steps: int,
    averages: Dict[str, float],
    lr: float,
    rate: float,
    seconds_per_step: float,
    recent_rate: float,
) -> str:
    """The train.log line written every log_period steps: samples/s averaged from the epoch's
    start (worker start-up and any compilation included) and over the steps since the previous
    line (the steady state); time left: this and the remaining epochs."""
    left = seconds_per_step * ((steps - done) + max(epochs - epoch - 1, 0) * steps)
    values = ", ".join(f"{name} {value:.4f}" for name, value in averages.items())
    return (
        f"epoch {epoch + 1}/{epochs} step {done}/{steps}: {values}, lr {lr:.3e}, {rate:.1f} samples/s from the "
        f"epoch's start, {recent_rate:.1f} since the last line, {_duration(left)} left"
    )


@dataclass
class Stepper:
    """What one optimisation step uses: the model as trained (under DDP or torch.compile, the
    wrapper), the loss, the optimizer, the precision and its GradScaler (None but for amp_fp16)."""

    model: torch.nn.Module
    criterion: Criterion
    optimizer: torch.optim.Optimizer
    precision: Precision
    scaler: Optional[torch.amp.GradScaler] = None

    def step(self, batch: Dict[str, torch.Tensor]) -> Tuple[Dict[str, torch.Tensor], Dict[str, torch.Tensor]]:
        """One optimisation step on a batch already on the device: the loss is
        ``sum(criterion(model(batch), batch)[0].values())``; returns the loss terms and metrics."""
        with self.precision.autocast():
            terms, metrics = self.criterion(self.model(batch), batch)
        loss = sum(terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return terms, metrics


@dataclass
class EpochReport:
    """How an epoch reports: every ``log_period`` steps its averages go to the log (when
    ``progress``; ``epochs``: the run's total, for the time left), TensorBoard (``scalars``:
    tag -> value at a step, e.g. ``RunKeeper.scalars``) and the progress bar. ``processes``:
    the ranks sharing each step (samples/s counts the global batch). ``checkpoint``, when
    set, is called every ``checkpoint_every`` global steps inside an epoch (not after its last
    batch: the epoch's own checkpoint follows) with the step and the :class:`EpochPosition`."""

    log_period: int
    scalars: Optional[Callable[[Dict[str, float], int], None]] = None
    progress: bool = True
    epochs: int = 0
    processes: int = 1
    checkpoint_every: int = 0
    checkpoint: Optional[Callable[[int, "EpochPosition"], None]] = None


@dataclass
class EpochPosition:
    """Where an epoch stands: its batches trained and the running loss sums (since the last
    log line, and since the epoch's start), the state a checkpoint inside an epoch keeps."""

    batches: int = 0
    logs: Dict[str, Any] = field(default_factory=dict)  # "log", "epoch_log": StepLog.state()


def train_one_epoch(
    stepper: Stepper,
    loader: DataLoader,
    epoch: int,
    step: int,
    report: EpochReport,
    position: Optional[EpochPosition] = None,
) -> tuple[int, Dict[str, float]]:
    """One pass over ``loader`` from global step ``step`` of 0-based epoch ``epoch``; returns
    the global step and the epoch's mean losses/metrics, with ``samples_per_s`` from the epoch's
    start and ``samples_per_s_steady`` from its first log line on (after the first log period).
    ``position``: the epoch resumed inside, ``loader`` already past its ``batches``."""
    stepper.model.train()
    device = stepper.precision.device
    log, epoch_log = StepLog(device), StepLog(device)
    started, seen, done = time.perf_counter(), 0, 0
    if position is not None and position.batches:
        done = position.batches
        log.load(position.logs["log"])
        epoch_log.load(position.logs["epoch_log"])
    first = done
    marks: List[Tuple[float, int]] = [(started, 0)]  # (time, samples seen) at each log line
    steps = len(loader) if hasattr(loader, "__len__") else 0
    # disable=None: no bar outside a terminal (a log file would hold its redraws); the log lines remain
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", disable=None if report.progress else True, leave=False)
    for batch in bar:
        batch = move_batch(batch, device)
        terms, metrics = stepper.step(batch)
        step += 1
        done += 1
        seen += batch["pids"].shape[0] * report.processes
        log.add(step, terms, metrics)
        epoch_log.add(step, terms, metrics)
        if step % report.log_period == 0:
            averages = log.flush()  # waits for the device: the times below are of finished steps
            now = time.perf_counter()
            rate, lr = seen / (now - started), stepper.optimizer.param_groups[0]["lr"]
            recent = (seen - marks[-1][1]) / max(now - marks[-1][0], 1e-9)
            marks.append((now, seen))
            bar.set_postfix(loss=f"{averages['loss']:.3f}", samples_s=f"{rate:.1f}")
            if report.progress:
                epochs = max(report.epochs, epoch + 1)
                line = log_line(
                    epoch, epochs, done, max(steps, done), averages, lr, rate, (now - started) / (done - first), recent
                )
                logger.info("%s", line)
            if report.scalars is not None:
                tags = {f"train/{name}": value for name, value in averages.items()}
                report.scalars({**tags, "train/lr": lr, "train/samples_per_s": rate}, step)
        if report.checkpoint is not None and report.checkpoint_every and step % report.checkpoint_every == 0:
            if done < steps or not steps:  # a loader without a length: every N steps
                log.check_finite()  # never a checkpoint of weights a non-finite loss reached (log sees every step)
                report.checkpoint(step, EpochPosition(done, {"log": log.state(), "epoch_log": epoch_log.state()}))
    log.check_finite()
    averages = epoch_log.flush()
    ended = time.perf_counter()
    averages["samples_per_s"] = seen / max(ended - started, 1e-9)
    if len(marks) > 1 and seen > marks[1][1]:
        averages["samples_per_s_steady"] = (seen - marks[1][1]) / max(ended - marks[1][0], 1e-9)
    return step, averages
