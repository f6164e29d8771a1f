"""train.py / test.py end to end on fixture data, precision modes, the NaN guard, resume."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import signal
import subprocess
import sys
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from conftest import ROOT, copy_run, tiny_batch, tiny_config, with_project_on_path
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from train_fixtures import epoch_means, make_fixture, read_metrics, tiny_run_args

import train as train_cli
from configs.loader import load_config
from model import objectives
from model.build import build_criterion, build_model, model_from_checkpoint
from processor import checkpointing as ckpt
from processor import epoch_loop
from processor.epoch_loop import EpochReport, NonFiniteLossError, StepLog, Stepper, train_one_epoch
from processor.precision import Precision
from solver import build_optimizer
from utils.io import save_atomic

# test.py by path: the name "test" is also a standard-library package.
_spec = importlib.util.spec_from_file_location("fmfa_test_cli", ROOT / "test.py")
test_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_cli)

METRIC_KEYS = {"epoch", "dataset", "split", "task", "R1", "R5", "R10", "mAP", "mINP"}


def test_run_folder_contents_and_test_cli(tmp_path):
    root, run = make_fixture(tmp_path / "data"), tmp_path / "run"
    assert train_cli.main(tiny_run_args(root, run, 2, "eval.at_start=true", "eval.i2t=true")) == 0
    for name in ("config.yaml", "train.log", "metrics.jsonl", "last.pth", "best.pth"):
        assert (run / name).is_file(), name
    # the one TensorBoard writer holds the loop's, the memory and the evaluation curves
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    loop = {"train/loss", "train/lr", "train/samples_per_s", "memory/rss_mb", "CUHK-PEDES/test/i2t/R1"}
    assert loop <= set(events.Tags()["scalars"])
    assert [event.step for event in events.Scalars("CUHK-PEDES/test/t2i/R1")] == [0, 1, 2]
    rows = read_metrics(run)
    assert all(set(row) == METRIC_KEYS for row in rows)
    assert [(r["epoch"], r["task"]) for r in rows] == [(e, t) for e in (0, 1, 2) for t in ("t2i", "i2t")]
    saved = load_config(run / "config.yaml")
    assert saved.solver.epochs == 2 and saved.model.vision_width == 64
    state = ckpt.load_training_state(run / "last.pth")
    # model.id_classes=captions (the default, the authors' train.py): 5 identities x 2 images x 2 captions
    assert state["epoch"] == 2 and state["num_classes"] == 20
    best = torch.load(run / "best.pth", weights_only=True)
    t2i = {r["epoch"]: r for r in rows if r["task"] == "t2i"}
    assert best["metrics"]["R1"] == max(t2i[e]["R1"] for e in (1, 2))
    # the best epoch is decided once: progress.json and the closing summary name best.pth's
    assert json.loads((run / "progress.json").read_text())["best"]["epoch"] == best["epoch"]
    assert f"best (epoch {best['epoch']}, test)" in (run / "train.log").read_text()
    # test.py rebuilds the model from the run folder and reproduces the best epoch's figures.
    assert test_cli.main([str(run)]) == 0
    tested = json.loads((run / "test_best_CUHK-PEDES_test_t2i+i2t.json").read_text())["results"]["CUHK-PEDES"]
    for key in ("R1", "R5", "R10", "mAP", "mINP"):
        assert tested["t2i"][key] == pytest.approx(t2i[best["epoch"]][key], abs=1e-4)
    assert model_from_checkpoint(str(run / "best.pth"), image_size=(32, 16)).classifier.out_features == 20


@pytest.mark.parametrize("mode", ["fp32", "amp_bf16", "amp_fp16", "pure_fp16"])
def test_precision_modes_train(mode):
    torch.manual_seed(0)
    precision = Precision(mode, torch.device("cpu"))
    model = precision.prepare_model(build_model(tiny_config(), num_classes=4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    # lr 1e-3: the recipe's 5e-6 steps are below fp16 resolution for pure_fp16 weights.
    optimizer = build_optimizer(model, replace(tiny_config().solver, lr=1e-3))
    scaler = precision.make_scaler()
    # amp_fp16 skips its first steps while the loss scale falls from 2^16 to a finite range.
    batches = [tiny_batch(seed=s) for s in range(10)]
    stepper = Stepper(model, build_criterion(tiny_config()), optimizer, precision, scaler)
    step, averages = train_one_epoch(stepper, batches, 0, 0, EpochReport(log_period=1, progress=False))
    assert step == 10 and all(torch.isfinite(torch.tensor(v)) for v in averages.values())
    weight_dtype = model.base_model.visual.conv1.weight.dtype
    assert weight_dtype == (torch.float16 if mode == "pure_fp16" else torch.float32)
    assert model.ln_post.weight.dtype == torch.float32  # LayerNorms stay float32 in every mode
    assert (scaler is not None) == (mode == "amp_fp16")
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "base_model.visual.conv1.weight" in changed and "classifier.weight" in changed


def test_epoch_logs_steady_state_samples_per_s_and_no_bar_outside_a_terminal(capsys, caplog, monkeypatch):
    """A slow first batch (worker start-up, compilation) weighs on the from-start average only;
    stderr is not a terminal here, so progress is the log's lines, not a redrawn bar. The clock
    is the batches': 10 s before the first, then 1 s each."""
    clock = [0.0]
    monkeypatch.setattr(epoch_loop, "time", SimpleNamespace(perf_counter=lambda: clock[0]))

    def batches():
        for seed in range(6):
            clock[0] += 11.0 if seed == 0 else 1.0
            yield tiny_batch(seed=seed)

    size = tiny_batch()["pids"].shape[0]
    torch.manual_seed(0)
    model = build_model(tiny_config(), num_classes=4)
    optimizer = build_optimizer(model, tiny_config().solver)
    stepper = Stepper(model, build_criterion(tiny_config()), optimizer, Precision("fp32", torch.device("cpu")))
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="processor.epoch_loop"):
        _, averages = train_one_epoch(stepper, batches(), 0, 0, EpochReport(log_period=2, progress=True, epochs=1))
    lines = [r.getMessage() for r in caplog.records if "samples/s" in r.getMessage()]
    rates = [re.search(r"([\d.]+) samples/s from the epoch's start, ([\d.]+) since the last line", x) for x in lines]
    assert [(float(m[1]), float(m[2])) for m in rates] == [
        pytest.approx((2 * size / 12, 2 * size / 12), abs=0.05),
        pytest.approx((4 * size / 14, 2 * size / 2), abs=0.05),
        pytest.approx((6 * size / 16, 2 * size / 2), abs=0.05),
    ], lines
    assert averages["samples_per_s"] == pytest.approx(6 * size / 16)
    assert averages["samples_per_s_steady"] == pytest.approx(4 * size / 4)  # from the first line on
    assert "\r" not in capsys.readouterr().err


def test_step_log_reports_the_first_non_finite_term():
    log = StepLog(torch.device("cpu"))
    good = {"sdm": torch.tensor(1.0), "efa": torch.tensor(2.0)}
    log.add(1, good, {"acc": torch.tensor(0.5)})
    log.add(2, {"sdm": torch.tensor(1.0), "efa": torch.tensor(float("inf"))}, {"acc": torch.tensor(0.5)})
    log.add(3, {"sdm": torch.tensor(float("nan")), "efa": torch.tensor(2.0)}, {"acc": torch.tensor(0.5)})
    with pytest.raises(NonFiniteLossError, match="non-finite loss 'efa' at step 2"):
        log.flush()


def test_nan_guard_stops_and_keeps_the_last_checkpoint(one_epoch_run, tmp_path, monkeypatch):
    root, trained = one_epoch_run  # tiny_run_args(root, run, 1)
    run = copy_run(trained, tmp_path / "run")
    saved = (run / "last.pth").read_bytes()
    real_efa, calls = objectives.efa_loss, []

    def efa_nan_at_third_call(*args, **kwargs):
        calls.append(1)
        value = real_efa(*args, **kwargs)
        return value * float("nan") if len(calls) == 3 else value

    monkeypatch.setattr(objectives, "efa_loss", efa_nan_at_third_call)
    with pytest.raises(NonFiniteLossError, match="non-finite loss 'efa' at step 8"):  # 5 steps per epoch
        train_cli.main(tiny_run_args(root, run, 2, f"train.resume={run}", "train.log_period=50"))
    assert (run / "last.pth").read_bytes() == saved
    assert ckpt.load_training_state(run / "last.pth")["epoch"] == 1


def test_crash_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    target = tmp_path / "last.pth"
    save_atomic({"epoch": 1, "w": torch.ones(3)}, target)

    def crash(obj, stream, *args, **kwargs):
        stream.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="No space left"):
        save_atomic({"epoch": 2, "w": torch.zeros(3)}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]  # no temporary file left


@pytest.mark.slow(seconds=15)
def test_killed_run_resumes_to_identical_results(three_epoch_run, tmp_path):
    """train.py SIGKILLs itself right after epoch 1's checkpoints are written (the
    FMFA_FAULT_KILL_AFTER_EPOCH point of tests/fault_injection.py: the same point on every
    run, however slow the machine); resumed, it ends with the metrics and the weights of an
    uninterrupted run (conftest.three_epoch_run: the same 3 epochs, 5 steps each)."""
    root, whole = three_epoch_run
    killed = tmp_path / "killed"
    env = {**with_project_on_path(), "FMFA_FAULT_KILL_AFTER_EPOCH": "1"}
    # timeout: a hang ends the test here; the kill itself waits on no clock
    result = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "fault_injection.py"), *tiny_run_args(root, killed, 3)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert ckpt.load_training_state(killed / "last.pth")["epoch"] == 1, "not killed right after epoch 1"
    assert [row["epoch"] for row in read_metrics(killed)] == [1]  # evaluated, then saved, then killed
    assert "epoch 2/3:" not in (killed / "train.log").read_text()
    assert train_cli.main(tiny_run_args(root, killed, 3, f"train.resume={killed}")) == 0
    assert "resumed from" in (killed / "train.log").read_text()
    assert read_metrics(killed) == read_metrics(whole)
    final_whole, final_killed = (ckpt.load_training_state(run / "last.pth") for run in (whole, killed))
    assert final_whole["model"].keys() == final_killed["model"].keys()
    assert all(torch.equal(final_whole["model"][k], v) for k, v in final_killed["model"].items())


@pytest.mark.slow(seconds=15)
def test_compiled_training_matches_eager_and_saves_plain_weights(tmp_path, monkeypatch):
    """train.compile=true trains through torch.compile with the eager run's losses (fixture
    data, 5 steps, every term of the epoch's mean within 1e-4 relative) and its checkpoints
    keep the plain module's keys, so test.py and init_from read them. The backend is
    aot_eager (AOTAutograd's forward/backward graphs without inductor's C++ code generation,
    which takes a minute here); the inductor path itself is measured by benchmarks.train_step."""
    real_compile, compiled = torch.compile, []
    monkeypatch.setattr(
        torch, "compile", lambda module: compiled.append(module) or real_compile(module, backend="aot_eager")
    )
    root = make_fixture(tmp_path / "data")
    terms, weights = {}, {}
    for flag in ("false", "true"):
        run = tmp_path / flag
        assert train_cli.main(tiny_run_args(root, run, 1, f"train.compile={flag}")) == 0
        [terms[flag]] = epoch_means(run)
        weights[flag] = ckpt.load_training_state(run / "last.pth")["model"]
    assert len(compiled) == 1  # only the compiled run, once
    assert terms["true"].keys() == terms["false"].keys() and "loss" in terms["true"]
    for name in ("a-sdm", "mlm", "id", "efa", "loss"):
        assert terms["true"][name] == pytest.approx(terms["false"][name], rel=1e-4), name
    assert weights["true"].keys() == weights["false"].keys()
    assert not any("_orig_mod" in key for key in weights["true"])
