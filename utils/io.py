"""Files a run writes, written so that a crash never leaves half of one.

:func:`atomic_write` is the one writer every other goes through: a temporary file in the
target's folder, flushed and fsynced, then moved into place with ``os.replace``. On any
failure the temporary file is removed and the previous file is left as it was.
metrics.jsonl is the exception by design: it is appended one flushed line at a time, and
a line cut by a power loss is skipped when read (``utils.run_folder`` reads a run's files).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator

from configs.defaults import Config
from configs.loader import config_yaml
from utils.run_folder import parse_metrics_lines

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary sibling of ``path`` for writing; on a clean exit it is flushed,
    fsynced and renamed onto ``path``. ``mode``: "wb" or "w" (UTF-8 text)."""
    path = Path(path)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(error, OSError):
            raise OSError(
                error.errno,
                f"could not write {path} ({error.strerror or error}); the previous {path.name}, if any, is intact",
            ) from error
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as stream:
        stream.write(text)


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_write`."""
    import torch  # here, not at the top: the tools that only read and write text start without torch

    with atomic_write(path) as stream:
        torch.save(obj, stream)


def save_config(cfg: Config, path: str | Path) -> None:
    """The resolved config as YAML (readable back by ``configs.load_config``), atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, config_yaml(cfg))


def write_with(path: str | Path, writer: Callable[[IO], None]) -> None:
    """``writer(stream)`` through :func:`atomic_write` (e.g. ``np.savez``)."""
    with atomic_write(path) as stream:
        writer(stream)


# ---------------------------------------------------------------------------- metrics.jsonl


def append_jsonl(path: Path, record: Dict) -> None:
    """One JSON object per line; written and flushed at once so a crash leaves whole lines."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(record) + "\n")
        handle.flush()


def drop_metrics_after(metrics_file: Path, epoch: int) -> None:
    """Keep only the whole metrics.jsonl rows of epochs up to ``epoch``: rows evaluated
    before a crash that came before their checkpoint are written again by the resumed run."""
    if not metrics_file.is_file():
        return
    lines = metrics_file.read_text(encoding="utf-8").splitlines()
    kept = [json.dumps(row) + "\n" for row in parse_metrics_lines(lines, metrics_file) if row["epoch"] <= epoch]
    if len(kept) < len(lines):
        write_text_atomic(metrics_file, "".join(kept))
        logger.info("%s: dropped %d row(s) after epoch %d", metrics_file, len(lines) - len(kept), epoch)
