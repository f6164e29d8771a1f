"""train.py with a fault injected, for the reliability tests (run by python or torchrun, with
the project on PYTHONPATH). The faults fire at a named point of the run, never after a time,
so a test sees the same fault on every run however slow the machine. Environment, each
variable optional:

  FMFA_FAULT="rank:epoch:batch"  raises RuntimeError("injected fault") on that rank when it
      reaches that batch (0-based) of that epoch (0-based); with FMFA_FAULT_MARKER set, only
      while the marker file is absent (it is created when the fault fires), so a restarted
      job runs clean.
  FMFA_FAULT_KILL_AFTER_EPOCH=N  the process SIGKILLs itself right after the checkpoints and
      progress.json of epoch N (1-based, as in last.pth's "epoch") are written: a kill -9
      at a known point, after which nothing of the process runs (no handler, no atexit).
      A run resumed past epoch N is not killed again.
  FMFA_FAULT_KILL_AFTER_STEP=N  the same, right after the last.pth written inside an epoch at
      global step N (train.checkpoint_every_steps) and its progress.json.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import train
from processor import run_keeper, training

FAULT = os.environ.get("FMFA_FAULT")
MARKER = os.environ.get("FMFA_FAULT_MARKER")
KILL_AFTER_EPOCH = os.environ.get("FMFA_FAULT_KILL_AFTER_EPOCH")
KILL_AFTER_STEP = os.environ.get("FMFA_FAULT_KILL_AFTER_STEP")


def _faulty_batches(loader, batch):
    for index, item in enumerate(loader):
        if index == batch and not (MARKER and os.path.exists(MARKER)):
            if MARKER:
                Path(MARKER).touch()
            raise RuntimeError("injected fault")
        yield item


if FAULT:
    RANK, EPOCH, BATCH = (int(v) for v in FAULT.split(":"))
    _real_train_one_epoch = training.train_one_epoch

    def _train_one_epoch(stepper, loader, epoch, *args, **kwargs):
        if epoch == EPOCH and int(os.environ.get("RANK", "0")) == RANK:
            loader = _faulty_batches(loader, BATCH)
        return _real_train_one_epoch(stepper, loader, epoch, *args, **kwargs)

    training.train_one_epoch = _train_one_epoch

if KILL_AFTER_EPOCH or KILL_AFTER_STEP:
    _real_save = run_keeper.RunKeeper.save

    def _save_then_kill(self, parts, best_metrics):
        _real_save(self, parts, best_metrics)  # best.pth, last.pth, progress.json
        if parts.inside is None and KILL_AFTER_EPOCH and parts.epoch == int(KILL_AFTER_EPOCH):
            os.kill(os.getpid(), signal.SIGKILL)
        if parts.inside is not None and KILL_AFTER_STEP and parts.step == int(KILL_AFTER_STEP):
            os.kill(os.getpid(), signal.SIGKILL)

    run_keeper.RunKeeper.save = _save_then_kill

if __name__ == "__main__":
    raise SystemExit(train.main(sys.argv[1:]))
