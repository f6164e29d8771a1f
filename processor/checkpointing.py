"""Run checkpoints: ``last.pth`` (everything to continue identically) and ``best.pth``.

Files are written to a temporary file in the same folder and moved into place with
``os.replace``, so a crash mid-write leaves the previous checkpoint intact. They hold only
tensors and plain Python values and load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from model.checkpoint import load_weights_file

LAST, BEST = "last.pth", "best.pth"


def save_atomic(obj: Any, path: Path) -> None:
    """torch.save to ``path`` via a temporary file and ``os.replace``."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(obj, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def training_state(model, optimizer, scheduler, scaler, epoch: int, step: int, best: Dict[str, Any],
                   config: Dict[str, Any], num_classes: int) -> Dict[str, Any]:
    """The content of ``last.pth`` after ``epoch`` (1-based) completed epochs."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None, "epoch": epoch, "step": step,
            "best": best, "rng": rng_state(), "config": config, "num_classes": num_classes}


def find_resume_file(path: str | Path) -> Path:
    """``path`` itself, or ``path/last.pth`` for a run folder; a clear error if absent."""
    path = Path(path)
    candidate = path / LAST if path.is_dir() else path
    if not candidate.is_file():
        raise FileNotFoundError(f"cannot resume: {candidate} not found (give a run folder holding {LAST} "
                                "or the checkpoint file)")
    return candidate


def load_training_state(path: Path) -> Dict[str, Any]:
    state = load_weights_file(path)
    missing = {"model", "optimizer", "scheduler", "epoch", "step", "best", "rng"} - set(state)
    if missing:
        raise ValueError(f"{path} is not a training checkpoint of this project (missing {sorted(missing)}); "
                         "to start from weights only, use model.pretrain or test.py")
    return state


def restore_training_state(state: Dict[str, Any], model, optimizer, scheduler, scaler: Optional[Any]) -> None:
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
