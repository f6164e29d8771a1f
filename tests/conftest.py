"""Shared fixtures: the golden recordings and tiny models.

Parity tests run on ``tests/golden`` (the reference's recordings at repository size, always
present) and again on the fuller ``../shared/golden`` (or ``FMFA_GOLDEN``) where it exists.
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, Tuple

import pytest

from configs.defaults import Config, ModelConfig

if TYPE_CHECKING:
    import torch

# torch and the tokenizer (open_clip) are imported where they are used: pytest-xdist's controller
# imports this file too and runs no test, and its start is on every run's critical path (those
# imports took 6 s of its 11 s before the workers were started).

ROOT = Path(__file__).resolve().parents[1]

# One CPU thread for torch in every process of the run, unless the caller sets OMP_NUM_THREADS
# (torch reads it when imported): the tests' tensors are tiny, and on a shared machine two
# threads per process spin against each other (measured under load: test_precision_modes_train
# 38 s on one thread, 179 s on two).
if "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def pytest_collection_modifyitems(items: List[pytest.Item]) -> None:
    """The files in decreasing order of the ``seconds`` their slow tests declare
    (``@pytest.mark.slow(seconds=...)``), each file's tests together and in their order.
    pyproject.toml's addopts hand whole files to whichever worker is free (module fixtures are
    built once): the longest start first and the short files fill the end, so the workers
    finish together."""
    weight: Dict[Path, float] = collections.Counter()
    for item in items:
        marker = item.get_closest_marker("slow")
        if marker is not None:
            if "seconds" not in marker.kwargs:
                raise pytest.UsageError(f"{item.nodeid}: write @pytest.mark.slow(seconds=S), S its measured time")
            weight[item.path] += float(marker.kwargs["seconds"])
    items.sort(key=lambda item: -weight[item.path])


@pytest.fixture(autouse=True)
def cublas_workspace_left_as_found():
    """No test leaves CUBLAS_WORKSPACE_CONFIG changed: train.deterministic sets it for its
    process, and every later test (and the programs they start) would inherit it."""
    before = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    yield
    after = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    assert after == before, f"CUBLAS_WORKSPACE_CONFIG left as {after!r} (was {before!r}): restore it (monkeypatch)"


COMPACT_GOLDEN = ROOT / "tests" / "golden"
FULL_GOLDEN = Path(os.environ.get("FMFA_GOLDEN", ROOT.parent / "shared" / "golden"))


@pytest.fixture(scope="session", params=["compact", "full"])
def golden(request) -> Path:
    """tests/golden (a missing file there is a failure, never a skip); then the full recordings,
    skipped with a reason where they are not beside the repository."""
    if request.param == "compact":
        assert (COMPACT_GOLDEN / "losses.pt").is_file(), f"{COMPACT_GOLDEN}: the parity recordings are missing"
        return COMPACT_GOLDEN
    if not FULL_GOLDEN.is_dir():
        pytest.skip(f"full golden folder {FULL_GOLDEN} not found (set FMFA_GOLDEN); tests/golden was checked")
    return FULL_GOLDEN


def load_golden(golden: Path, name: str):
    import torch

    return torch.load(golden / name, map_location="cpu", weights_only=True)


def assert_rel_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 1e-5) -> None:
    """Relative error ``max|actual - expected| / max|expected|`` at most ``rtol`` (docs/method.md's
    criterion: float32 rounding of the same computation in another operation order)."""
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    error = (actual.detach().double() - expected.double()).abs().max()
    scale = expected.double().abs().max().clamp_min(1e-12)
    assert error <= rtol * scale, f"relative error {float(error / scale):.2e} > {rtol:.0e}"


def tiny_config(**model_overrides) -> Config:
    """A CLIP of width 64, 2 layers per tower, 64 x 32 images (4 x 2 patches), IRR depth 1."""
    model = dict(
        pretrain="none",
        image_size=[64, 32],
        embed_dim=64,
        vision_width=64,
        vision_layers=2,
        text_width=64,
        text_layers=2,
        cmt_depth=1,
    )
    model.update(model_overrides)
    return Config(model=ModelConfig(**model))


def tiny_batch(batch_size: int = 6, image_size=(64, 32), seed: int = 0) -> dict:
    """Random images, captions of 3-8 tokens with one masked token each, repeated identities."""
    import torch

    from datasets.tokenizer import EOT_ID, MASK_ID, SOT_ID

    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros(batch_size, 77, dtype=torch.long)
    labels = torch.zeros_like(ids)
    for row in range(batch_size):
        length = int(torch.randint(3, 9, (1,), generator=gen))
        ids[row, 0], ids[row, length + 1] = SOT_ID, EOT_ID
        ids[row, 1 : length + 1] = torch.randint(1, MASK_ID, (length,), generator=gen)
    mlm_ids = ids.clone()
    labels[:, 1] = ids[:, 1]
    mlm_ids[:, 1] = MASK_ID
    return {
        "images": torch.randn(batch_size, 3, *image_size, generator=gen),
        "caption_ids": ids,
        "mlm_ids": mlm_ids,
        "mlm_labels": labels,
        "pids": torch.arange(batch_size) % 4,
    }


def user_error(capsys, main, argv) -> str:
    """``main(argv)`` answers a user mistake: exit status 2 and one ``error:`` line on stderr
    (no traceback). Returns that message."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1, err
    return err


def with_project_on_path(env: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``env`` (default: this process's) with the project first on PYTHONPATH, keeping what was
    there (the GPU machine finds open_clip through PYTHONPATH: benchmarks/gpu_run.sh)."""
    env = dict(os.environ if env is None else env)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def run_ok(
    command: Sequence[str], cwd: Path = ROOT, env: Optional[Dict[str, str]] = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run ``command`` (output captured as text); it must exit 0, else its stderr's tail fails the test."""
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="session")
def one_epoch_run(tmp_path_factory) -> Tuple[Path, Path]:
    """(data root, run folder) of ``train.py`` on ``train_fixtures.tiny_run_args(root, run, 1)``
    over the default CUHK-PEDES fixture, trained once per session for the tests that only need a
    trained run. Read-only: a test that writes to the run works on ``copy_run``'s copy."""
    from train_fixtures import make_fixture, tiny_run_args

    import train as train_cli

    base = tmp_path_factory.mktemp("one_epoch_run")
    root, run = make_fixture(base / "data"), base / "run"
    assert train_cli.main(tiny_run_args(root, run, 1)) == 0
    return root, run


@pytest.fixture(scope="session")
def three_epoch_run(tmp_path_factory) -> Tuple[Path, Path]:
    """(data root, run folder) of ``tiny_run_args(root, run, 3)`` on the default fixture, trained
    once per session: the uninterrupted run the resume tests must end identical to. Read-only."""
    from train_fixtures import make_fixture, tiny_run_args

    import train as train_cli

    base = tmp_path_factory.mktemp("three_epoch_run")
    root, run = make_fixture(base / "data"), base / "run"
    assert train_cli.main(tiny_run_args(root, run, 3)) == 0
    return root, run


def copy_run(run: Path, destination: Path) -> Path:
    """A copy of the run folder ``run`` at ``destination`` (the saved config's output_dir still
    names the original: run folders compare configs without where they live)."""
    shutil.copytree(run, destination)
    return destination
