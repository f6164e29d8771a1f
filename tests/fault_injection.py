"""train.py with a fault injected, for the reliability tests (run by python or torchrun).

Environment: FMFA_FAULT="rank:epoch:batch" raises RuntimeError("injected fault") on that
rank when it reaches that batch (0-based) of that epoch (0-based); with FMFA_FAULT_MARKER
set, only while the marker file is absent (it is created when the fault fires), so a
restarted job runs clean.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import train
from processor import processor

RANK, EPOCH, BATCH = (int(v) for v in os.environ["FMFA_FAULT"].split(":"))
MARKER = os.environ.get("FMFA_FAULT_MARKER")
_real_train_one_epoch = processor.train_one_epoch


def _faulty_batches(loader):
    for index, batch in enumerate(loader):
        if index == BATCH and not (MARKER and os.path.exists(MARKER)):
            if MARKER:
                Path(MARKER).touch()
            raise RuntimeError("injected fault")
        yield batch


def _train_one_epoch(model, criterion, loader, optimizer, precision, scaler, epoch, *args, **kwargs):
    if epoch == EPOCH and int(os.environ.get("RANK", "0")) == RANK:
        loader = _faulty_batches(loader)
    return _real_train_one_epoch(model, criterion, loader, optimizer, precision, scaler, epoch, *args, **kwargs)


processor.train_one_epoch = _train_one_epoch

if __name__ == "__main__":
    sys.exit(train.main(sys.argv[1:]))
