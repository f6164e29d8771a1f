"""Console + file logging; only rank 0 writes the run's log."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Optional

from utils.run_folder import LOG_FILE

FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def setup_logging(output_dir: Optional[Path] = None, rank: int = 0, file_name: str = LOG_FILE) -> None:
    """INFO to the console (rank 0) and to ``output_dir/file_name``; other ranks log
    warnings to the console and append their errors to the same file."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(logging.Formatter(FORMAT if rank == 0 else f"[rank {rank}] " + FORMAT, "%H:%M:%S"))
    root.addHandler(console)
    if output_dir is not None:
        output_dir.mkdir(parents=True, exist_ok=True)
        to_file = logging.FileHandler(output_dir / file_name)  # append mode: one write per record
        to_file.setFormatter(logging.Formatter(FORMAT if rank == 0 else f"[rank {rank}] " + FORMAT))
        to_file.setLevel(logging.INFO if rank == 0 else logging.ERROR)
        root.addHandler(to_file)
