"""Several machines: two torchrun agents (two "nodes" of one process each) meet through the
c10d rendezvous on localhost, as docs/several_gpus.md launches them on two machines, and
train the one-process recipe: the run ends with the one-process run's weights (gloo)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from conftest import ROOT
from train_fixtures import make_fixture, read_metrics, tiny_run_args

import train as train_cli
from benchmarks.ddp_equality import relative_error
from processor import checkpointing as ckpt


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_command(port: int, args: list) -> list:
    """The multi-node torchrun line of docs/several_gpus.md, both nodes on this machine."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--nproc_per_node=1",
        "--rdzv_backend=c10d",
        f"--rdzv_endpoint=127.0.0.1:{port}",
        "--rdzv_id=fmfa_two_nodes",
        "train.py",
        *args,
    ]


def test_two_nodes_of_one_process_end_with_the_one_process_weights(tmp_path):
    root = make_fixture(tmp_path / "data", identities=8)
    args = ["data.batch_size=8", "model.id_classes=identities", "solver.eps=1e-3"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_cli.main(tiny_run_args(root, one, 2, *args)) == 0
    command = node_command(free_port(), tiny_run_args(root, two, 2, *args))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    nodes = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "2 process(es)" in (two / "train.log").read_text()
    assert [r["epoch"] for r in read_metrics(two)] == [1, 2]
    weights = [ckpt.load_training_state(run / "last.pth")["model"] for run in (one, two)]
    errors = {name: relative_error(weights[1][name], value) for name, value in weights[0].items()}
    assert max(errors.values()) <= 1e-4, sorted(errors.items(), key=lambda item: -item[1])[:3]
