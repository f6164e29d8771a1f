"""What the run checkpoints hold: ``last.pth`` (everything to continue identically) and
``best.pth`` (the best epoch's weights, metrics and config); their names and the run
folder are ``utils.run_folder``'s.

Files are written with ``utils.io.save_atomic`` (a temporary file in the same folder moved
into place with ``os.replace``), so a crash mid-write leaves the previous checkpoint intact. They hold only
tensors and plain Python values and load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

import torch

from model.checkpoint import WeightsError, load_matching_state_dict, load_weights_file
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


def training_state(
    model,
    optimizer,
    scheduler,
    scaler,
    epoch: int,
    step: int,
    best: Dict[str, Any],
    config: Dict[str, Any],
    num_classes: int,
    device: torch.device,
) -> Dict[str, Any]:
    """The content of ``last.pth`` after ``epoch`` (1-based) completed epochs on ``device``."""
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "step": step,
        "best": best,
        "rng": rng_state(device),
        "config": config,
        "num_classes": num_classes,
    }


def best_state(
    model, epoch: int, metrics: Dict[str, float], config: Dict[str, Any], num_classes: int
) -> Dict[str, Any]:
    """The content of ``best.pth``: the weights of the best epoch so far and what test.py needs."""
    return {
        "model": model.state_dict(),
        "epoch": epoch,
        "metrics": metrics,
        "config": config,
        "num_classes": num_classes,
    }


def load_training_state(path: Path) -> Dict[str, Any]:
    state = load_weights_file(path)
    missing = {"model", "optimizer", "scheduler", "epoch", "step", "best", "rng"} - set(state)
    if missing:
        raise WeightsError(
            f"{path} is not a training checkpoint of this project (missing {sorted(missing)}); "
            "to start from weights only, use model.pretrain or test.py"
        )
    return state


def restore_training_state(
    state: Dict[str, Any],
    model,
    optimizer,
    scheduler,
    scaler: Optional[Any],
    device: torch.device,
    source: str = "checkpoint",
    hint: str = "",
) -> None:
    load_matching_state_dict(model, state["model"], source, hint)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"], device)
