"""What a start does with its run folder, decided before anything is built or written:
start fresh, continue from last.pth, or report a finished run. A folder holding a run of
another config is never continued or overwritten by an automatic resume."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List

from configs.defaults import Config
from configs.errors import ConfigError
from configs.loader import config_differences, config_to_dict, load_config
from processor import checkpointing as ckpt
from utils.distributed import restart_attempt
from utils.io import write_text_atomic

CONFIG_FILE = "config.yaml"
PROGRESS_FILE = "progress.json"  # {"epoch": completed epochs, "epochs": planned, "best": {...}}
# Where a run is trained, not what is trained: may differ between the starts of one run.
WHERE_KEYS = {"train.output_dir", "train.resume", "train.auto_resume"}


@dataclass
class StartPlan:
    resume_from: str = ""  # last.pth to continue from; "" = a fresh run
    finished: bool = False  # every epoch is done: nothing to train
    epoch: int = 0  # epochs completed so far


def write_progress(output_dir: Path, epoch: int, epochs: int, best: Dict[str, Any]) -> None:
    write_text_atomic(output_dir / PROGRESS_FILE, json.dumps({"epoch": epoch, "epochs": epochs, "best": best}))


def read_progress(output_dir: Path) -> Dict[str, Any]:
    try:
        return json.loads((output_dir / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def saved_config_differences(cfg: Config, output_dir: Path) -> List[str]:
    """``key: saved -> now`` for each config value (other than WHERE_KEYS) that differs from
    the run folder's config.yaml; [] when there is none to compare with."""
    saved_file = output_dir / CONFIG_FILE
    if not saved_file.is_file():
        return []
    try:
        saved = config_to_dict(load_config(saved_file, check=False))
    except ConfigError as error:
        return [f"{saved_file} cannot be read ({error})"]
    return [line for line in config_differences(saved, config_to_dict(cfg)) if line.split(":")[0] not in WHERE_KEYS]


def plan_start(cfg: Config, output_dir: Path) -> StartPlan:
    """train.resume; else continue the folder's own last.pth when train.auto_resume is set
    or torchrun restarted the job (refused if the folder was made with another config;
    a finished run is reported, not trained again); else a fresh run, refused when the
    folder already holds one."""
    if cfg.train.resume:
        return StartPlan(str(ckpt.find_resume_file(cfg.train.resume)))
    if not (output_dir / ckpt.LAST).is_file():
        return StartPlan()
    if not (cfg.train.auto_resume or restart_attempt() > 0):
        raise ckpt.RunFolderError(
            f"run folder {output_dir} already holds a run ({ckpt.LAST}); continue it with train.auto_resume=true "
            f"(or train.resume={output_dir}), or choose another train.output_dir")
    changed = saved_config_differences(cfg, output_dir)
    if changed:
        raise ckpt.RunFolderError(
            f"run folder {output_dir} holds a run of another config; it is neither continued nor overwritten. "
            f"Differences (saved -> now): {'; '.join(changed)}. Choose another train.output_dir, or continue it "
            f"explicitly with train.resume={output_dir}")
    done = int(read_progress(output_dir).get("epoch", 0))
    return StartPlan(str(output_dir / ckpt.LAST), finished=done >= cfg.solver.epochs, epoch=done)
