"""A weights file inside a run folder is used with that run's config (its image size, text
length and dataset), saying so; a file without one names the two ways to give it; the Python
block of docs/tools.md runs on a run's file. The run is a quick-start-sized model saved
untrained: what is checked is how its file is read, not what it learnt."""

from __future__ import annotations

import logging
import re
import shutil

import pytest
import torch
from conftest import ROOT, user_error
from train_fixtures import ONE_EPOCH_QUICKSTART

import test as test_cli
from configs.loader import load_config
from dataset_tools.synthetic import generate
from datasets.tokenizer import tokenize_batch
from model.build import build_model, model_from_checkpoint
from utils.io import save_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(data root, run folder holding config.yaml and best.pth) at the quick start's 96 x 32, 48 tokens."""
    base = tmp_path_factory.mktemp("run_weights")
    data = base / "data"
    generate(data, num_train_ids=4, num_val_ids=2, num_test_ids=4, image_size=(96, 32), seed=3)
    cfg = load_config(ROOT / "configs" / "quickstart.yaml", [*ONE_EPOCH_QUICKSTART, f"data.root={data}"])
    folder = base / "runs" / "quickstart"
    save_config(cfg, folder / "config.yaml")
    torch.manual_seed(0)
    torch.save({"model": build_model(cfg, num_classes=8).state_dict()}, folder / "best.pth")
    return data, folder


def test_a_run_file_is_evaluated_with_the_config_beside_it(run, tmp_path, capsys):
    data, folder = run
    output = tmp_path / "metrics.json"
    assert test_cli.main([str(folder / "best.pth"), "--output", str(output)]) == 0
    assert f"read with {folder / 'config.yaml'}, the run's config beside it" in capsys.readouterr().out  # the log
    assert '"Synthetic-PEDES"' in output.read_text()  # the run's dataset, not the default CUHK-PEDES


def test_a_lone_run_file_names_the_run_folder_and_config_ways(run, tmp_path, capsys):
    data, folder = run
    lone = tmp_path / "best.pth"
    shutil.copy(folder / "best.pth", lone)
    for overrides in ([], ["data.dataset=Synthetic-PEDES", f"data.root={data}"]):
        message = user_error(capsys, test_cli.main, [str(lone), *overrides])
        assert "read with the default config" in message
        assert "give its run folder as the source, or --config RUN_FOLDER/config.yaml" in message
    assert "not a square grid" in message  # the second: the data found, the 96 x 32 weights refused at 384 x 128
    with_config = [str(lone), "--config", str(folder / "config.yaml"), "--output", str(tmp_path / "m.json")]
    assert test_cli.main(with_config) == 0


def test_model_from_checkpoint_takes_the_run_image_size_or_says_how(run, tmp_path, caplog):
    _, folder = run
    with caplog.at_level(logging.INFO):
        model = model_from_checkpoint(str(folder / "best.pth"))
    assert (model.image_size, model.text_length) == ((96, 32), 48)
    assert "image size 96 x 32 from" in caplog.text
    lone = tmp_path / "best.pth"
    shutil.copy(folder / "best.pth", lone)
    with pytest.raises(ValueError, match=r"pass image_size=\(H, W\), or keep the run's config.yaml beside"):
        model_from_checkpoint(str(lone))
    assert model_from_checkpoint(str(lone), image_size=(96, 32)).image_size == (96, 32)
    next_step = r"takes 48 per caption: tokenize with tokenize_batch\(captions, text_length=48\)"
    with pytest.raises(ValueError, match=next_step):
        model.encode_text(tokenize_batch(["a man in a black jacket"]))  # the tokenizer's default 77


def test_the_python_block_of_docs_tools_runs_on_a_run_file(run, tmp_path, monkeypatch, capsys):
    data, folder = run
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "quickstart").symlink_to(folder)
    (tmp_path / "data").symlink_to(data)
    monkeypatch.chdir(tmp_path)
    text = (ROOT / "docs" / "tools.md").read_text(encoding="utf-8")
    block = re.search(r"^From Python.*?```python\n(.*?)```", text, re.S | re.M).group(1)
    names: dict = {}
    exec(compile(block, "docs/tools.md", "exec"), names)  # noqa: S102 (the documented block, as written)
    assert (names["height"], names["width"], names["length"]) == (96, 32, 48)
    assert names["ids"].shape == (1, 48) and names["images"].shape == (8, 3, 96, 32)
    norms = torch.cat([names["text"], names["gallery"]]).norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones(9))  # normalised as the block says
    printed = capsys.readouterr().out
    assert sorted(eval(printed)) == names["paths"]  # noqa: S307 (the printed list of 8 paths, ranked)
