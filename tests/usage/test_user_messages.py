"""A newcomer's mistakes get answers that say what to do: missing weights name the argument
and the download, a run folder without best.pth offers --which last, IRRA options name their
key, every missing input is reported in one run, and search.py names its model source.
Nothing here trains or loads a model: each mistake stops before that."""

from __future__ import annotations

import dataclasses
import re
import runpy
import shutil
import sys

import pytest
from conftest import ROOT, user_error

import export_onnx
import search
import test as test_cli
import train as train_cli
from configs.defaults import Config
from configs.irra_flags import IRRA_FLAGS, config_keys, foreign_flag_lines
from configs.loader import build_parser, load_config
from model.clip_weights import CLIP_WEIGHTS_URL
from utils.cli import describe


@pytest.fixture
def run_folder(tmp_path):
    """A run folder as train.py leaves it before its first evaluation: config.yaml only."""
    folder = tmp_path / "run"
    folder.mkdir()
    shutil.copy(ROOT / "configs" / "quickstart.yaml", folder / "config.yaml")
    return folder


def test_missing_weights_name_the_argument_and_the_download(tmp_path, capsys):
    weights = tmp_path / "ViT-B-16.pt"
    message = user_error(capsys, test_cli.main, [str(weights), f"data.root={tmp_path / 'nodata'}"])
    assert f"checkpoint not found: {weights} (given as SOURCE)" in message
    assert CLIP_WEIGHTS_URL in message and "run folder" in message
    assert f"dataset folder {tmp_path / 'nodata' / 'CUHK-PEDES'} not found" in message  # in the same report
    message = user_error(capsys, search.main, ["--checkpoint", str(weights), "--images", str(tmp_path), "--query", "a"])
    assert "(given as --checkpoint)" in message and f"no images in {tmp_path}" in message


def test_export_onnx_says_why_it_needs_its_verification_split(tmp_path, capsys):
    nodata = tmp_path / "nodata"
    argv = [str(tmp_path / "best.pth"), "--output", str(tmp_path / "out"), "--root", str(nodata), "--split", "val"]
    message = user_error(capsys, export_onnx.main, argv)
    assert "checkpoint not found" in message and "2 problems" in message
    assert "the export is verified on CUHK-PEDES val before it is written" in message
    assert "--dataset, --split and --root choose another" in message and not (tmp_path / "out").exists()


def test_a_run_folder_without_best_pth_offers_the_last_checkpoint(run_folder, tmp_path, capsys):
    nodata = f"data.root={tmp_path / 'nodata'}"
    message = user_error(capsys, test_cli.main, [str(run_folder), nodata])
    assert "holds no best.pth yet" in message and "no epoch has finished" in message
    (run_folder / "last.pth").write_bytes(b"")  # only its presence matters to the answer
    message = user_error(capsys, test_cli.main, [str(run_folder), nodata])
    assert "--which last evaluates its last.pth" in message
    (run_folder / "best.pth").write_bytes(b"")
    (run_folder / "last.pth").unlink()
    message = user_error(capsys, test_cli.main, [str(run_folder), "--which", "last", nodata])
    assert "holds no last.pth" in message and "--which best evaluates its best.pth" in message


def test_irra_options_are_answered_with_their_keys(capsys):
    with pytest.raises(SystemExit) as stop:
        train_cli.main(["--batch_size", "64", "--num_epoch=60", "--MLM"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--batch_size 64 -> data.batch_size=64" in err
    assert "--num_epoch 60 -> solver.epochs=60" in err and "--MLM -> loss.names=" in err
    assert "unrecognized" not in err
    # Options the parser knows, overrides and unknown words are left to the parser.
    assert foreign_flag_lines(["--config", "x.yaml", "data.root=d", "--nonsense_word"], build_parser()) == []


def test_every_irra_answer_is_a_config_key():
    """Each answer that is an override names a real key; one with a fixed value loads as written."""
    cfg = Config()
    keys = {f"{s.name}.{f.name}" for s in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, s.name))}
    for flag, answer in IRRA_FLAGS.items():
        override = answer.split(" ")[0]
        if not re.fullmatch(r"[a-z_]+\.[a-z_.]+=\S*", override):
            assert answer.startswith(("python test.py", "nothing: ")), (flag, answer)  # a program, or no key
            continue
        key = override.split("=")[0]
        assert key in keys or key.startswith("loss.weights."), (flag, key)
        if "{}" not in override:
            load_config(None, [override])  # raises ConfigError naming the key if the table is wrong


def test_the_docs_table_of_irra_options_is_the_code_table():
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(--\w+)` \| `([^`]*)` \|$", text, re.M))
    assert rows == {flag: answer.replace("{}", "VALUE") for flag, answer in IRRA_FLAGS.items()}


def test_an_unknown_option_with_a_key_of_that_name_is_answered():
    assert config_keys()["epochs"] == "solver.epochs"
    assert foreign_flag_lines(["--epochs", "3"], build_parser()) == ["--epochs 3 -> solver.epochs=3"]


def test_several_missing_inputs_are_reported_at_once(tmp_path, capsys):
    nodata = tmp_path / "nodata"
    message = user_error(
        capsys,
        train_cli.main,
        [
            "--config",
            str(ROOT / "configs" / "quickstart.yaml"),
            f"data.root={nodata}",
            f"model.pretrain={nodata / 'ViT-B-16.pt'}",
            f"model.init_from={nodata / 'ham.pth'}",
            "eval.cross_domain=[RSTPReid]",
        ],
    )
    assert "4 problems, all reported at once" in message
    for fragment in ("model.pretrain=", "model.init_from=", "Synthetic-PEDES not found", "RSTPReid not found"):
        assert fragment in message, fragment
    assert "HAM" in message  # where the init_from checkpoint comes from


def test_search_without_arguments_names_every_missing_one(capsys):
    with pytest.raises(SystemExit) as stop:
        search.main([])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "--checkpoint RUN_OR_WEIGHTS or --onnx DIR" in err and "--images FOLDER" in err and "--query TEXT" in err


def test_help_descriptions_are_whole_sentences_without_markup():
    doc = "First line of a sentence\n    that goes on, ``python -m x``.\n\nDetails.\n"
    assert describe(doc) == "First line of a sentence that goes on, python -m x."


def test_ddp_equality_help_is_a_usage_not_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["ddp_equality", "--help"])
    with pytest.raises(SystemExit) as stop:
        runpy.run_module("benchmarks.ddp_equality", run_name="__main__")
    assert stop.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m benchmarks.ddp_equality") and "compare one.pt two.pt" in out
