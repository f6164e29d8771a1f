"""The run folder's rules (its file names are in ``utils.run_layout``): where a run's folder
is, and the start decision, made before anything is built or written: a fresh run, a
continuation from last.pth, a finished run reported, or a refusal (a folder of another config
is never continued or overwritten by an automatic resume).

No model or checkpoint code here; the object that applies these rules over a run's life is
``processor.run_keeper.RunKeeper``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional

from configs.defaults import Config
from configs.errors import ConfigError, UserError
from configs.loader import config_differences, config_to_dict, load_config
from utils.distributed import DistInfo, broadcast_object, elastic_job_id, restart_attempt
from utils.io import write_text_atomic
from utils.run_layout import BEST, CONFIG_FILE, LAST, PROGRESS_FILE, WHERE_KEYS


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


def prepare_run_folder(path: Path) -> None:
    """Create ``path`` and prove it writable with a probe file, before anything heavy starts."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write_probe"):
            pass
    except OSError as error:
        raise RunFolderError(
            f"run folder {path} is not writable ({error.strerror or error}); "
            "fix its permissions or choose another train.output_dir"
        ) from None


def check_free_space(path: Path, needed: int) -> None:
    free = shutil.disk_usage(path).free
    if free < needed:
        raise RunFolderError(
            f"run folder {path}: {free / 2**30:.2f} GiB free, but its checkpoints need about "
            f"{needed / 2**30:.2f} GiB ({LAST}, its temporary copy while written, {BEST}); "
            "free some space or choose another train.output_dir"
        )


def find_resume_file(path: str | Path) -> Path:
    """``path`` itself, or ``path/last.pth`` for a run folder; a clear error if absent."""
    path = Path(path)
    candidate = path / LAST if path.is_dir() else path
    if not candidate.is_file():
        raise RunFolderError(
            f"cannot resume: {candidate} not found (give a run folder holding {LAST} or the checkpoint file)"
        )
    return candidate


def write_progress(output_dir: Path, epoch: int, epochs: int, best: Dict[str, Any]) -> None:
    write_text_atomic(output_dir / PROGRESS_FILE, json.dumps({"epoch": epoch, "epochs": epochs, "best": best}))


def read_progress(output_dir: Path) -> Dict[str, Any]:
    try:
        return json.loads((output_dir / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


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
    """train.resume; else continue the folder's own last.pth when train.auto_resume is set
    or torchrun restarted the job (refused if the folder was made with another config;
    a finished run is reported, not trained again); else a fresh run, refused when the
    folder already holds one."""
    if cfg.train.resume:
        return StartPlan(find_resume_file(cfg.train.resume))
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
    done = int(read_progress(output_dir).get("epoch", 0))
    return StartPlan(output_dir / LAST, done >= cfg.solver.epochs, done, config_differences=[])
