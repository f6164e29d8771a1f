"""Run checkpoints: ``last.pth`` (everything to continue identically) and ``best.pth``.

Files are written with ``utils.io.save_atomic`` (a temporary file in the same folder moved
into place with ``os.replace``), so a crash mid-write leaves the previous checkpoint intact. They hold only
tensors and plain Python values and load with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from configs.errors import UserError
from model.checkpoint import WeightsError, WeightsNotFoundError, load_matching_state_dict, load_weights_file

LAST, BEST = "last.pth", "best.pth"


class RunFolderError(UserError, RuntimeError):
    """The run folder cannot hold the run (not writable, too little space, or already holds one)."""


def prepare_run_folder(path: Path) -> None:
    """Create ``path`` and prove it writable with a probe file, before anything heavy starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_probe"):
            pass
    except OSError as error:
        raise RunFolderError(f"run folder {path} is not writable ({error.strerror or error}); "
                             "fix its permissions or choose another train.output_dir") from None


def checkpoint_bytes_needed(model: torch.nn.Module, path: Path) -> int:
    """Disk space the run's checkpoints still need in ``path``: last.pth holds the weights and
    Adam's two moments and is written beside the previous one, best.pth holds the weights;
    10% margin; files already there count as used."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    existing = sum((path / name).stat().st_size for name in (LAST, BEST) if (path / name).is_file())
    return max(int(1.1 * weights * (3 + 3 + 1)) - existing, 0)


def check_free_space(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise RunFolderError(f"run folder {path}: {free / 2**30:.2f} GiB free, but its checkpoints need about "
                             f"{needed / 2**30:.2f} GiB (last.pth, its temporary copy while written, best.pth); "
                             "free some space or choose another train.output_dir")


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
        raise WeightsNotFoundError(f"cannot resume: {candidate} not found (give a run folder holding {LAST} "
                                "or the checkpoint file)")
    return candidate


def load_training_state(path: Path) -> Dict[str, Any]:
    state = load_weights_file(path)
    missing = {"model", "optimizer", "scheduler", "epoch", "step", "best", "rng"} - set(state)
    if missing:
        raise WeightsError(f"{path} is not a training checkpoint of this project (missing {sorted(missing)}); "
                         "to start from weights only, use model.pretrain or test.py")
    return state


def restore_training_state(state: Dict[str, Any], model, optimizer, scheduler, scaler: Optional[Any],
                           source: str = "checkpoint", hint: str = "") -> None:
    load_matching_state_dict(model, state["model"], source, hint)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if scaler is not None and state.get("scaler") is not None:
        scaler.load_state_dict(state["scaler"])
    restore_rng_state(state["rng"])
