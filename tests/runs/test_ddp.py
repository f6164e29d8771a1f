"""Several processes train exactly the one-process recipe (gloo on the CPU).

One step per case (random and identity sampler x both caption modes, benchmarks/ddp_equality.py)
with 1 and 2 processes on the same global batch of 12: every loss term, metric and
parameter gradient (after DDP's averaging) agree to float32 rounding: terms, metrics and the
whole gradient vector within 1e-5 relative; each parameter's gradient is as close to the
same step computed in float64 as the one-process float32 gradient is (within twice its
largest error). Tensor-wise, two float32 steps can differ by more than 1e-5: a bias or
layer-norm gradient is a sum over samples and tokens that cancels, and measured, the
one-process float32 gradient is itself up to 2.3e-5 off float64 (3 processes: 2.1e-5, and
1.4e-5 off one process; per-rank losses: 0.9-4.5). Then a whole 2-epoch run on two torchrun
agents (two "machines" of one process, c10d rendezvous) ends with the one-process run's
weights and metrics.

Process launches are what costs here, so: the one-process and float64 steps run in this
process (one thread, as a torchrun worker here runs); one torchrun launch computes the
2-process step and its per-rank-losses variant (``--and``). The 3-process split of the
batch-coupled losses is checked in process, against true shards, by the sharded-loss tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_ok
from train_fixtures import make_fixture, read_metrics, tiny_run_args

import train as train_cli
from benchmarks import ddp_equality
from benchmarks.ddp_equality import largest_differences
from processor import checkpointing as ckpt

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def one_thread_steps(root: Path, folder: Path) -> dict:
    """The one-process step and its float64 reference, in this process on one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ddp_equality.step(str(root), str(folder / "1.pt"), "--and", str(folder / "float64.pt"), "float64")
    finally:
        torch.set_num_threads(threads)
    return {name: torch.load(folder / f"{name}.pt", weights_only=True) for name in (1, "float64")}


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """({1, 2, "float64", "per_rank": the steps of each}, the data root)."""
    folder = tmp_path_factory.mktemp("ddp")
    root = make_fixture(folder / "data", identities=8)
    results = one_thread_steps(root, folder)
    two, per_rank = folder / "2.pt", folder / "per_rank.pt"
    run_ok(
        [*TORCHRUN, "--nproc_per_node=2", "-m", "benchmarks.ddp_equality", "step", str(root), str(two)]
        + ["--and", str(per_rank), "train.global_batch_losses=false"],
        env=ONE_THREAD,
    )
    results.update({2: torch.load(two, weights_only=True), "per_rank": torch.load(per_rank, weights_only=True)})
    return results, root


def largest_difference(actual: torch.Tensor, expected: torch.Tensor) -> float:
    """max |actual - expected| (in float64)."""
    return float((actual.double() - expected.double()).abs().max())


def _largest(errors: dict, kind: str) -> float:
    return max(values[kind] for values in errors.values())


@pytest.mark.slow(seconds=30)
def test_one_step_on_two_processes_is_the_one_process_step(steps):
    results, _ = steps
    assert len(results[1]) == 4 and all(len(case["grads"]) > 20 for case in results[1].values())
    for case, errors in largest_differences(results[2], results[1]).items():
        assert max(errors["terms"], errors["metrics"], errors["grad_norm"]) <= 1e-5, f"{case}: {errors}"
    # Each parameter's gradient: 2 processes are as close to the float64 step as one process is.
    one_process = largest_differences(results[1], results["float64"])
    assert 0 < _largest(one_process, "grads") <= 1e-4, one_process  # float32 rounding, not another step
    two_processes = largest_differences(results[2], results["float64"])
    assert _largest(two_processes, "grads") <= 2 * _largest(one_process, "grads"), (two_processes, one_process)


def test_per_rank_losses_are_a_different_training(steps):
    """train.global_batch_losses=false (each rank's losses see its own share): the same
    comparison sees gradients far apart, so the check above can fail."""
    results, _ = steps
    per_rank = results["per_rank"]
    for case, errors in largest_differences(per_rank, results[1]).items():
        assert errors["grads"] > 1e-2, f"{case}: {errors}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_node_launch(args: list) -> None:
    """docs/several_gpus.md's multi-node torchrun line, both "nodes" (agents of one process each)
    on this machine, meeting through the c10d rendezvous on localhost."""
    command = [
        *TORCHRUN[:3],
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{free_port()}",
        "--rdzv_id=fmfa_two_nodes",
        "train.py",
        *args,
    ]
    nodes = [
        subprocess.Popen(command, cwd=ROOT, env=ONE_THREAD, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]


@pytest.mark.slow(seconds=30)
def test_two_node_run_ends_with_the_one_process_weights_and_metrics(steps, tmp_path):
    """2 epochs on 2 machines' worth of torchrun (2 agents x 1 process, c10d rendezvous), global
    batch 8 over 32 training captions, A-SDM + MLM + ID + EFA with augmentation and the shared
    masked caption, the recipe's Adam epsilon (1e-3). With epsilon 1e-8 the key biases of the
    attention layers, whose true gradient is 0 (softmax ignores a shift shared by all keys),
    move by +-lr on the sign of float32 rounding noise, differently in each process count; that
    is Adam, not the data parallelism. (torchrun --standalone on one machine: test_reliability.)"""
    _, root = steps
    args = ["data.batch_size=8", "data.augment=true", "model.id_classes=identities", "solver.eps=1e-3"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_cli.main(tiny_run_args(root, one, 2, *args)) == 0
    two_node_launch(tiny_run_args(root, two, 2, *args))
    assert "2 process(es)" in (two / "train.log").read_text()
    assert sorted(p.name for p in two.iterdir() if p.suffix == ".pth") == ["best.pth", "last.pth"]
    assert [r["epoch"] for r in read_metrics(two)] == [1, 2]  # rank 0 alone evaluates and writes
    assert_same_training(one, two, root)


def assert_same_training(one: Path, two: Path, root: Path) -> None:
    """The runs ``one`` and ``two`` end with the same weights (within 5% of one Adam step) and metrics."""
    weights = [ckpt.load_training_state(run / "last.pth")["model"] for run in (one, two)]
    assert weights[0].keys() == weights[1].keys()
    # Adam moves a weight by about lr per step, whatever its size: the 8 steps of two runs that
    # differ (another batch, another loss) land whole steps apart. Float32 rounding, amplified
    # by Adam's normalisation on weights with small gradients (a text position that one caption
    # reaches), moves them by a small share of one step: measured up to 1.4% of lr.
    lr = float(next(arg for arg in tiny_run_args(root, one) if arg.startswith("solver.lr=")).split("=")[1])
    steps_apart = {name: largest_difference(weights[1][name], value) / lr for name, value in weights[0].items()}
    assert max(steps_apart.values()) <= 0.05, sorted(steps_apart.items(), key=lambda item: -item[1])[:3]
    for expected, got in zip(read_metrics(one), read_metrics(two), strict=True):
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            assert got[key] == (pytest.approx(value, abs=1e-6) if isinstance(value, float) else value), key
