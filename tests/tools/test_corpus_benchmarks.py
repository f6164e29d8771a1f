"""The corpus-scale benchmarks at a tiny size: the training dataset's start-up (files against
shards, each loader built in a fresh subprocess) and the synthetic corpus end to end (draw,
shards, pretraining, fine-tuning, test as the commands a user types)."""

from __future__ import annotations

import json
import re

import pytest

from benchmarks import dataset_startup, pretrain_corpus
from datasets.readers import RetrievalDataset
from datasets.shards import read_manifest

NARROW = ["model.vision_width=64", "model.text_width=64", "model.embed_dim=64", "model.vision_layers=1"]
NARROW += ["model.text_layers=1", "data.batch_size=16", "train.log_period=2"]


def table_rows(out: str, keys: int) -> dict:
    """{first ``keys`` cells: the cells after them} of each body row of a printed prettytable."""
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("records", "step"):
            rows[tuple(cells[:keys])] = cells[keys:]
    return rows


@pytest.mark.slow(seconds=11)
def test_dataset_startup_measures_both_loaders_on_the_same_records(tmp_path, capsys):
    assert dataset_startup.main(["--records", "2000", "--out", str(tmp_path)]) == 0
    rows = table_rows(capsys.readouterr().out, 2)
    files, shards = rows[("2,000", "JSON + folder")], rows[("2,000", "manifest + shards")]
    assert float(files[1]) > 0 and float(files[2]) > 0, files  # wall and CPU seconds
    # Peak RSS above the imports' process: at 2,000 records tens of MB, within reach of its noise.
    assert all(float(cell) >= 0 for cell in [files[3], *shards[1:4]]), (files, shards)
    # 2,000 records: tokenizing 4,000 captions outweighs reading a manifest and checking 2 shard sizes
    assert float(files[2]) > float(shards[2]) and int(re.fullmatch(r"CPU (\d+)x", files[4]).group(1)) > 1
    assert re.fullmatch(r"memory \d+x", shards[4])
    # Both inputs describe the same 2,000 records, 4,000 pairs, with identities.
    corpus = RetrievalDataset(tmp_path / "2000", dataset_startup.CORPUS)
    manifest = read_manifest(tmp_path / "2000" / "shards")
    assert len(corpus.records) == 2000 and len(corpus.train_pairs().captions) == manifest.pairs == 4000
    assert manifest.identities and len(manifest.identity_labels()) == corpus.train_pairs().num_classes == 1000
    manifest.check_sizes()


@pytest.mark.slow(seconds=5)
def test_dataset_startup_stops_a_loader_over_its_limits(tmp_path, capsys):
    assert dataset_startup.main(["--records", "50", "--out", str(tmp_path), "--cpu-limit-s", "0.3"]) == 0
    out = capsys.readouterr().out
    for kind in ("files", "shards"):  # stopped while importing torch
        assert re.search(rf"{kind}: stopped by the CPU time limit after \d+ s \(0 s CPU\), \d+ MB", out), out
    files, shards = (table_rows(out, 2)[("50", loader)] for loader in ("JSON + folder", "manifest + shards"))
    assert all(cell.startswith("> ") for cell in files[1:4] + shards[1:4]), (files, shards)
    assert re.fullmatch(r"CPU > \d+x", files[4]) and re.fullmatch(r"memory > \d+x", shards[4])


@pytest.mark.slow(seconds=20)
def test_pretrain_corpus_runs_every_step_end_to_end(tmp_path, capsys):
    argv = ["--pairs", "200", "--out", str(tmp_path), "--shard-size", "40", "--finetune-ids", "12", "0", "8"]
    argv += ["--finetune-epochs", "1", "--epoch-pairs", "160"] + [f"--set={item}" for item in NARROW]
    assert pretrain_corpus.main(argv) == 0
    rows = {step: cells for (step,), cells in table_rows(capsys.readouterr().out, 1).items()}
    assert list(rows) == list(pretrain_corpus.FIGURES)  # every step, in order
    assert all(float(wall) > 0 for wall, _ in rows.values())
    assert rows["draw corpus"][1].startswith("100 images, 200 pairs in ")
    assert re.fullmatch(r"3 shards, [\d.]+ MB, 200 pairs in [\d.]+ s: \d+ pairs/s written", rows["write shards"][1])
    assert rows["pretrain 1 epoch"][1].startswith("10 steps; at step 10: ")  # 160 pairs, batches of 16
    assert re.fullmatch(r"\d+ tensors from the pretrained run, \d+ new", rows["fine-tune"][1])
    assert rows["test"][1].startswith("t2i R1 ")
    assert rows["test from scratch"][1].startswith("t2i R1 ")
    assert "initialised from" not in (tmp_path / "runs" / "scratch" / "train.log").read_text()
    out = tmp_path
    assert len(json.loads((out / "corpus" / "Synthetic-PEDES" / "reid_raw.json").read_text())) == 100
    manifest = read_manifest(out / "shards")
    assert len(manifest.shards) == 3 and manifest.pairs == 200 and not manifest.identities
    for path in ("data/Synthetic-PEDES/reid_raw.json", "runs/pretrain/best.pth", "runs/finetune/best.pth"):
        assert (out / path).is_file(), path
    assert "shard_epoch_samples: 160" in (out / "runs" / "pretrain" / "config.yaml").read_text()
    tested = json.loads((out / "runs" / "finetune" / "test_best_Synthetic-PEDES_test.json").read_text())
    assert rows["test"][1].startswith(f"t2i R1 {tested['results']['Synthetic-PEDES']['t2i']['R1']:.1f}, R5 ")
