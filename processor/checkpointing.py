"""What a run's checkpoints hold: ``last.pth`` (everything to continue identically) and
``best.pth`` (the best epoch's weights, metrics and config); their names are
``utils.run_folder``'s, ``processor.run_keeper.RunKeeper`` writes and reads them, and a
resumed run's :class:`TrainingParts` restore themselves from what it reads.

Files are written with ``utils.io.save_atomic`` (a temporary file in the same folder moved
into place with ``os.replace``), so a crash mid-write leaves the previous checkpoint intact. They hold only
tensors and plain Python values and load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from model.weights_file import WeightsError, load_matching_state_dict, load_weights_file
from utils.run_folder import BEST, LAST


def checkpoint_bytes_needed(model: torch.nn.Module, path: Path) -> int:
    """Disk space the run's checkpoints still need in ``path``: last.pth holds the weights and
    Adam's two moments and is written beside the previous one, best.pth holds the weights;
    10% margin; files already there count as used."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    existing = sum((path / name).stat().st_size for name in (LAST, BEST) if (path / name).is_file())
    return max(int(1.1 * weights * (3 + 3 + 1)) - existing, 0)


def rng_state(device: torch.device) -> Dict[str, Any]:
    """The CPU generator's state and, when training on a GPU, that GPU's (only: asking for every
    visible GPU's would initialise CUDA on each, and a run on the CPU must not touch CUDA)."""
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: Dict[str, Any], device: torch.device) -> None:
    """The saved generators onto this process's: the GPU's onto ``device`` whatever GPU saved it,
    so a run resumes where fewer (or other) GPUs are visible than when it was saved. A list (one
    state per visible GPU, as torch.cuda.get_rng_state_all gives) contributes ``device``'s entry,
    else its first."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None or device.type != "cuda":
        return
    if isinstance(cuda, (list, tuple)):
        cuda = cuda[device.index] if device.index is not None and device.index < len(cuda) else cuda[0]
    torch.cuda.set_rng_state(cuda, device)


@dataclass
class TrainingParts:
    """What last.pth saves and a resume restores: the model (unwrapped), its optimizer, LR
    schedule and GradScaler (None without amp_fp16), the number of identities, the device
    trained on (for its RNG), and the position: completed epochs and optimizer steps, and
    ``inside`` an epoch when saved there (its batches trained, loss sums and loader layout;
    None at an epoch's end, and then last.pth holds no ``position``)."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Optional[Any]
    num_classes: int
    device: torch.device
    epoch: int = 0
    step: int = 0
    inside: Optional[Dict[str, Any]] = None

    def restore(self, state: Dict[str, Any], source: str = "checkpoint", hint: str = "") -> None:
        """A loaded last.pth onto these parts: weights, optimizer, schedule, scaler, RNG and position."""
        load_matching_state_dict(self.model, state["model"], source, hint)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"], self.device)
        self.epoch, self.step = state["epoch"], state["step"]
        self.inside = state.get("position")


# What a last.pth holds at least (a best.pth holds the weights and what test.py needs only).
TRAINING_STATE_KEYS = frozenset({"model", "optimizer", "scheduler", "epoch", "step", "best", "rng"})


def training_state(parts: TrainingParts, best: Dict[str, Any], config: Dict[str, Any]) -> Dict[str, Any]:
    """The content of ``last.pth`` after ``parts.epoch`` (1-based) completed epochs (and
    ``parts.inside`` the next one, when saved inside it)."""
    position = {} if parts.inside is None else {"position": parts.inside}
    return {
        **position,
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
        "scheduler": parts.scheduler.state_dict(),
        "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
        "epoch": parts.epoch,
        "step": parts.step,
        "best": best,
        "rng": rng_state(parts.device),
        "config": config,
        "num_classes": parts.num_classes,
    }


def best_state(parts: TrainingParts, metrics: Dict[str, float], config: Dict[str, Any]) -> Dict[str, Any]:
    """The content of ``best.pth``: the weights of the best epoch so far and what test.py needs."""
    return {
        "model": parts.model.state_dict(),
        "epoch": parts.epoch,
        "metrics": metrics,
        "config": config,
        "num_classes": parts.num_classes,
    }


def load_training_state(path: Path) -> Dict[str, Any]:
    state = load_weights_file(path)
    missing = TRAINING_STATE_KEYS - set(state)
    if missing:
        raise WeightsError(
            f"{path} is not a training checkpoint of this project (missing {sorted(missing)}); "
            "to start from weights only, use model.pretrain or test.py"
        )
    return state
