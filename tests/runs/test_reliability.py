"""Faults and bad input never lose a run, hang, or run foreign code."""

from __future__ import annotations

import gc
import json
import os
import pickle
import re
import subprocess
import sys
from collections import namedtuple

import pytest
import torch
from conftest import ROOT, copy_run, user_error, with_project_on_path
from train_fixtures import make_fixture, read_metrics, tiny_run_args

import train as train_cli
from processor import checkpointing as ckpt
from processor import run_keeper, training
from processor.epoch_loop import StepLog
from utils.distributed import WholeErrorFile


def test_crash_inside_checkpoint_write_then_auto_resume_continues_identically(three_epoch_run, tmp_path, monkeypatch):
    root, whole = three_epoch_run  # the same 3 epochs, uninterrupted
    crashed = tmp_path / "crashed"
    real_save = torch.save

    def disk_full_while_writing_epoch_2(obj, stream, *args, **kwargs):
        if isinstance(obj, dict) and obj.get("epoch") == 2 and "optimizer" in obj:
            stream.write(b"half a checkpoint")
            raise OSError(28, "No space left on device")
        return real_save(obj, stream, *args, **kwargs)

    monkeypatch.setattr(torch, "save", disk_full_while_writing_epoch_2)
    with pytest.raises(OSError, match=r"could not write .*last\.pth \(No space left on device\); the previous"):
        train_cli.main(tiny_run_args(root, crashed, 3))
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.load_training_state(crashed / "last.pth")["epoch"] == 1
    assert not [p for p in crashed.iterdir() if p.name.endswith(".tmp")]
    assert max(row["epoch"] for row in read_metrics(crashed)) == 2  # evaluated, then the save failed
    assert train_cli.main(tiny_run_args(root, crashed, 3, "train.auto_resume=true")) == 0
    assert read_metrics(crashed) == read_metrics(whole)  # epoch 2's stale row was replaced, not duplicated
    final = ckpt.load_training_state(crashed / "last.pth")["model"]
    assert all(torch.equal(v, final[k]) for k, v in ckpt.load_training_state(whole / "last.pth")["model"].items())


def test_a_fresh_run_never_overwrites_an_existing_one(one_epoch_run, tmp_path, capsys):
    root, trained = one_epoch_run  # tiny_run_args(root, run, 1)
    run = copy_run(trained, tmp_path / "run")
    saved = (run / "last.pth").read_bytes()
    assert re.search(
        r"already holds a run .*train\.auto_resume=true",
        user_error(capsys, train_cli.main, tiny_run_args(root, run, 2)),
    )
    assert (run / "last.pth").read_bytes() == saved
    # an automatic resume never continues a run of another config (here: more epochs) ...
    message = user_error(capsys, train_cli.main, tiny_run_args(root, run, 2, "train.auto_resume=true"))
    assert "holds a run of another config" in message and "solver.epochs: 1 -> 2" in message
    assert (run / "last.pth").read_bytes() == saved
    # ... a rerun of the same config reports the finished run and writes nothing ...
    assert train_cli.main(tiny_run_args(root, run, 1, "train.auto_resume=true")) == 0
    finished = capsys.readouterr().out  # with its closing summary at progress.json's best epoch
    assert "already finished (1/1 epochs)" in finished and "best (epoch 1, test)" in finished
    assert (run / "last.pth").read_bytes() == saved
    # ... and an explicit train.resume extends it
    assert train_cli.main(tiny_run_args(root, run, 2, f"train.resume={run}")) == 0
    assert [row["epoch"] for row in read_metrics(run)] == [1, 2]


def test_unwritable_run_folder_is_refused_before_anything_heavy(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    root = make_fixture(tmp_path / "data")
    (root / "CUHK-PEDES" / "reid_raw.json").write_text("[not json")  # the folder check comes before any read
    assert f"run folder {blocker}/run is not writable" in user_error(
        capsys, train_cli.main, tiny_run_args(root, blocker / "run", 1)
    )


def test_too_little_free_space_is_refused_before_training(tmp_path, monkeypatch, capsys):
    root, run = make_fixture(tmp_path / "data"), tmp_path / "run"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(run_keeper.shutil, "disk_usage", lambda path: usage(10**12, 10**12 - 4096, 4096))
    assert "0.00 GiB free, but its checkpoints need about" in user_error(
        capsys, train_cli.main, tiny_run_args(root, run, 1)
    )
    assert not (run / "last.pth").exists() and not (run / "metrics.jsonl").exists()


def test_checkpoint_space_estimate_counts_adam_state_and_existing_files(tmp_path):
    model = torch.nn.Linear(1000, 250)  # 250,250 float32 parameters
    weights = 250_250 * 4
    assert ckpt.checkpoint_bytes_needed(model, tmp_path) == int(1.1 * weights * 7)
    (tmp_path / "last.pth").write_bytes(b"x" * weights)
    assert ckpt.checkpoint_bytes_needed(model, tmp_path) == int(1.1 * weights * 7) - weights


def test_resume_with_a_different_architecture_names_keys_and_config(one_epoch_run, tmp_path, capsys):
    root, trained = one_epoch_run  # tiny_run_args(root, run, 1)
    run = copy_run(trained, tmp_path / "run")
    automatic = user_error(
        capsys, train_cli.main, tiny_run_args(root, run, 2, "train.auto_resume=true", "model.embed_dim=128")
    )
    assert "holds a run of another config" in automatic and "model.embed_dim: 64 -> 128" in automatic
    message = user_error(
        capsys, train_cli.main, tiny_run_args(root, run, 2, f"train.resume={run}", "model.embed_dim=128")
    )
    assert "last.pth: weights do not fit this model" in message
    assert "shape of base_model.text_projection: checkpoint [64, 64], model [64, 128]" in message
    assert "model.embed_dim: 64 -> 128" in message
    assert (run / "config.yaml").read_bytes() == (trained / "config.yaml").read_bytes()  # how it was trained


def test_a_refused_resume_leaves_the_run_folders_config_untouched(one_epoch_run, tmp_path, capsys):
    """train.resume with another global batch onto a last.pth saved inside an epoch (a
    position that depends on the batch) is refused; config.yaml keeps its bytes, so a later
    automatic resume still compares against the config the run was trained with."""
    root, trained = one_epoch_run  # tiny_run_args(root, run, 1): data.batch_size=4
    run = copy_run(trained, tmp_path / "run")
    state = ckpt.load_training_state(run / "last.pth")
    state.update(epoch=0, position={"batches": 1, "logs": {}, "layout": {"data.batch_size": 4}})
    torch.save(state, run / "last.pth")
    saved = (run / "config.yaml").read_bytes()
    message = user_error(
        capsys, train_cli.main, tiny_run_args(root, run, 1, f"train.resume={run}", "data.batch_size=2")
    )
    assert "saved inside epoch 1 (1 batches) with {'data.batch_size': 4}" in message
    assert (run / "config.yaml").read_bytes() == saved


class _Payload:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ['FMFA_PAYLOAD_PROOF']}",))


def test_resuming_from_a_code_carrying_pickle_is_refused(tmp_path, monkeypatch, capsys):
    root, proof = make_fixture(tmp_path / "data"), tmp_path / "payload_ran"
    monkeypatch.setenv("FMFA_PAYLOAD_PROOF", str(proof))
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps({"model": _Payload()}))
    assert "evil.pth: refused to load" in user_error(
        capsys, train_cli.main, tiny_run_args(root, tmp_path / "run", 1, f"train.resume={evil}")
    )
    assert not proof.exists()


def _torchrun(tmp_path, args, fault, *torchrun_options, cwd=ROOT):
    # The script runs from tests/: the project comes from PYTHONPATH, as for any program using it.
    env = {**with_project_on_path(), "FMFA_FAULT": fault, "FMFA_FAULT_MARKER": str(tmp_path / "fault_fired")}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        *torchrun_options,
        str(ROOT / "tests" / "fault_injection.py"),
        *args,
    ]
    # timeout: a job that does not end is caught here; nothing waits on a clock otherwise
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.slow(seconds=15)
def test_an_exception_on_one_rank_ends_the_whole_job(tmp_path):
    root, run = make_fixture(tmp_path / "data"), tmp_path / "run"
    result = _torchrun(tmp_path, tiny_run_args(root, run, 2), "1:0:1")
    assert result.returncode != 0
    log = (run / "train.log").read_text()
    assert "[rank 1]" in log and "rank 1 of 2 failed: RuntimeError: injected fault" in log
    assert "injected fault" in result.stderr  # torchrun's report names the failing rank's error


@pytest.mark.slow(seconds=35)
def test_torchrun_restart_continues_from_last_checkpoint(tmp_path):
    """No train.output_dir and no train.auto_resume: the restarted workers find the folder
    of the first attempt (named with torchrun's job id) and continue from its last.pth."""
    root = make_fixture(tmp_path / "data")
    args = [a for a in tiny_run_args(root, tmp_path / "unused", 2) if not a.startswith("train.output_dir=")]
    result = _torchrun(tmp_path, args, "1:1:0", "--max-restarts=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "fault_fired").exists()
    [run] = (tmp_path / "runs" / "CUHK-PEDES").iterdir()
    assert "resumed from" in (run / "train.log").read_text()
    assert [row["epoch"] for row in read_metrics(run)] == [1, 2]


def _report_killed_while_writing(handler, error_file, monkeypatch) -> None:
    """``handler`` records an exception for torchrun, and the process is "killed" (SystemExit)
    after torch's error handler has opened the report and before it has written anything: the
    SIGTERM torchrun sends the other ranks when one fails can land there."""
    import torch.distributed.elastic.multiprocessing.errors.error_handler as torch_handler

    def killed(*args, **kwargs):
        raise SystemExit(-15)

    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    monkeypatch.setattr(torch_handler.json, "dump", killed)
    with pytest.raises(SystemExit):
        try:
            raise RuntimeError("connection closed by peer")
        except RuntimeError as error:
            handler.record_exception(error)


def test_a_rank_killed_while_writing_its_error_report_leaves_no_partial_report(tmp_path, monkeypatch):
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, ProcessFailure

    torchs, ours = tmp_path / "torch_error.json", tmp_path / "error.json"
    _report_killed_while_writing(ErrorHandler(), torchs, monkeypatch)
    with pytest.raises(json.JSONDecodeError):  # what crashed torchrun's agent once in CI
        ProcessFailure(local_rank=0, pid=1, exitcode=-15, error_file=str(torchs))
    _report_killed_while_writing(WholeErrorFile(), ours, monkeypatch)
    assert not ours.exists() and os.environ["TORCHELASTIC_ERROR_FILE"] == str(ours)
    assert "Signal 15" in ProcessFailure(local_rank=0, pid=1, exitcode=-15, error_file=str(ours)).message


def test_the_error_report_is_torchs_own(tmp_path, monkeypatch):
    from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

    error_file = tmp_path / "error.json"
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    try:
        raise RuntimeError("injected fault")
    except RuntimeError as error:
        WholeErrorFile().record_exception(error)
    failure = ProcessFailure(local_rank=1, pid=1, exitcode=1, error_file=str(error_file))
    assert failure.message["message"] == "RuntimeError: injected fault"
    assert [p.name for p in tmp_path.iterdir()] == ["error.json"]


def test_the_whole_error_report_needs_only_torchs_public_contract(tmp_path, monkeypatch):
    """A torch whose handler reads TORCHELASTIC_ERROR_FILE in its own way (no private
    ``_get_error_file_path`` to lean on) still gets its report written whole, in its format."""
    from torch.distributed.elastic.multiprocessing.errors import ErrorHandler, ProcessFailure

    def record_exception(self, e: BaseException) -> None:
        seen.append(os.environ["TORCHELASTIC_ERROR_FILE"])
        with open(seen[-1], "w") as stream:
            json.dump({"message": {"message": f"{type(e).__name__}: {e}", "extraInfo": {"timestamp": "0"}}}, stream)

    seen, error_file = [], tmp_path / "error.json"
    monkeypatch.delattr(ErrorHandler, "_get_error_file_path")
    monkeypatch.setattr(ErrorHandler, "record_exception", record_exception)
    monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(error_file))
    WholeErrorFile().record_exception(RuntimeError("injected fault"))
    assert seen != [str(error_file)] and os.environ["TORCHELASTIC_ERROR_FILE"] == str(error_file)
    failure = ProcessFailure(local_rank=0, pid=1, exitcode=1, error_file=str(error_file))
    assert failure.message["message"] == "RuntimeError: injected fault"
    assert [p.name for p in tmp_path.iterdir()] == ["error.json"]


def live_tensors() -> int:
    """The torch.Tensor objects alive in this process after a full collection: a count, not a
    size, so no allocator (its caching, arenas or fragmentation) can blur it. By type(), not
    isinstance(), which reads __class__ and so wakes lazy deprecated module attributes."""
    gc.collect()
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


def _live_tensors_per_epoch(tmp_path, monkeypatch, leak: bool) -> tuple[list, list]:
    """Live tensors at the end of each epoch of a tiny 3-epoch run (evaluated and saved every
    epoch), and the steps of each epoch. ``leak`` keeps every step's loss with its graph
    alive, the mistake the count must see."""
    root, run = make_fixture(tmp_path / "data"), tmp_path / "run"
    real, counts, steps, kept = training.train_one_epoch, [], [], []

    def measured(stepper, loader, *args, **kwargs):
        result = real(stepper, loader, *args, **kwargs)
        steps.append(len(loader))
        counts.append(live_tensors())
        return result

    monkeypatch.setattr(training, "train_one_epoch", measured)
    if leak:
        real_add = StepLog.add
        monkeypatch.setattr(
            StepLog,
            "add",
            lambda self, step, terms, metrics: (kept.append(sum(terms.values())), real_add(self, step, terms, metrics)),
        )
    assert train_cli.main(tiny_run_args(root, run, 3)) == 0
    assert len(counts) == 3 and min(steps) > 0
    return counts, steps


def test_live_tensors_do_not_grow_across_epochs(tmp_path, monkeypatch):
    """Exactly the same count after every epoch: from the end of epoch 1 on, all a run keeps
    (weights, their gradients, Adam's moments, the schedule) exists, and nothing of a step,
    an evaluation or a checkpoint write may outlive it; there is no noise to allow for."""
    counts, _ = _live_tensors_per_epoch(tmp_path, monkeypatch, leak=False)
    assert counts == [counts[0]] * len(counts), f"live tensors after each epoch: {counts}"


def test_the_tensor_count_sees_a_leak(tmp_path, monkeypatch):
    """A graph kept per step adds at least one live tensor (its loss) per step of an epoch."""
    counts, steps = _live_tensors_per_epoch(tmp_path, monkeypatch, leak=True)
    growth = [after - before for before, after in zip(counts, counts[1:])]
    assert all(grown >= step for grown, step in zip(growth, steps[1:])), (
        f"live tensors after each epoch: {counts}, steps per epoch: {steps}"
    )


def test_bad_config_values_stop_train_py_before_anything_is_created(tmp_path, capsys):
    run = tmp_path / "run"
    bad = [
        "data.batch_size=0",
        "solver.lr=-1e-5",
        "loss.names=a-sdm+foo",
        "data.dataset=Market/1501",
        "model.image_size=[36,16]",
    ]
    with pytest.raises(SystemExit) as caught:
        train_cli.main(tiny_run_args(tmp_path / "data", run, 1, *bad))
    assert caught.value.code == 2
    message = capsys.readouterr().err
    for key in (
        "data.batch_size=0",
        "solver.lr=-1e-05",
        "loss.names",
        "foo",
        "data.dataset='Market/1501'",
        "CUHK-PEDES, ICFG-PEDES, RSTPReid",
        "model.image_size",
        "multiples of model.patch_size=8",
    ):
        assert key in message, key
    assert not run.exists()


def test_a_metrics_line_cut_by_a_crash_is_dropped_on_resume(one_epoch_run, tmp_path):
    root, trained = one_epoch_run  # tiny_run_args(root, run, 1)
    run = copy_run(trained, tmp_path / "run")
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write('{"epoch": 2, "dataset": "CUHK-PE')  # power loss mid-write
    assert train_cli.main(tiny_run_args(root, run, 2, f"train.resume={run}")) == 0
    assert [row["epoch"] for row in read_metrics(run)] == [1, 2]


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "model.pretrain={tmp}/ViT-B-16.pt",
            [
                "model.pretrain=",
                "ViT-B-16.pt",
                "file not found",
                "openaipublic.azureedge.net",
                "open_clip:ViT-B-16/openai",
            ],
        ),
        ("model.pretrain=open_clip:ViT-Q-99/nowhere", ["model.pretrain=", "open_clip has no model 'ViT-Q-99'"]),
        (
            "data.root={tmp}/nodata",
            [
                "dataset folder {tmp}/nodata/CUHK-PEDES not found",
                "set data.root",
                "ShuangLI59/Person-Search-with-Natural-Language-Description",
            ],
        ),
        ("eval.cross_domain=[RSTPReid]", ["RSTPReid not found", "NjtechCVLab"]),
        (
            "data.dataset=Market-1501",
            ["unknown dataset 'Market-1501'", "{tmp}/data/Market-1501/annotations.json", "datasets.make_annotations"],
        ),
        ("model.init_from={tmp}/ham.pth", ["model.init_from=", "ham.pth", "not found"]),
    ],
)
def test_a_failed_start_names_the_key_and_leaves_no_folder(tmp_path, capsys, override, expected):
    """Missing weights or data stop train.py in one line (exit 2) before a run folder exists
    and before any annotation is read."""
    root, run = make_fixture(tmp_path / "data"), tmp_path / "run"
    message = user_error(capsys, train_cli.main, tiny_run_args(root, run, 1, override.format(tmp=tmp_path)))
    for fragment in expected:
        assert fragment.format(tmp=tmp_path) in message, (fragment, message)
    assert not run.exists()


def test_device_auto_refuses_a_gpu_sized_config_on_the_cpu(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    root, run = make_fixture(tmp_path / "data"), tmp_path / "run"
    paper_sized = ["model.image_size=[384,128]", "model.patch_size=16", "model.vision_width=768", "train.device=auto"]
    message = user_error(capsys, train_cli.main, tiny_run_args(root, run, 1, *paper_sized))
    assert "train.device=auto found no GPU" in message and "GFLOP per training sample" in message
    assert "train.device=cpu" in message and not run.exists()
