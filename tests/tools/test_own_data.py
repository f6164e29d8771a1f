"""Your own data: any ROOT/NAME/annotations.json is a dataset for every program (README, "Your own data")."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, user_error
from data_fixtures import write_dataset
from train_fixtures import ONE_EPOCH_QUICKSTART

import export_features
import train as train_cli
import visualize
from configs.loader import load_config
from dataset_tools.check import main as check_main
from dataset_tools.make_annotations import main as make_annotations_main
from dataset_tools.synthetic import generate
from datasets.readers import DataError, RetrievalDataset, check_dataset_files

# test.py by its path: a plain `import test` can find Python's own test package first.
_SPEC = importlib.util.spec_from_file_location("fmfa_test_cli_own_data", ROOT / "test.py")
test_cli = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(test_cli)


def _records():
    return [
        {"id": 4, "file_path": "cam1/a.jpg", "captions": ["A man in a red coat."], "split": "train"},
        {"id": 9, "img_path": "cam2/b.jpg", "captions": ["A woman in green.", "Green dress."], "split": "train"},
        {"id": 4, "file_path": "cam2/c.jpg", "captions": ["The man in red."]},  # no split: test
        {"id": 5, "img_path": "cam1/d.jpg", "captions": ["A child."], "split": "val"},
    ]


def _write(root: Path, name: str, records) -> Path:
    folder = root / name
    for key in ("file_path", "img_path"):  # write_dataset writes the images of one key at a time
        write_dataset(folder, "annotations.json", key, [r for r in records if key in r])
    (folder / "annotations.json").write_text(json.dumps(records))
    return folder


def test_any_folder_with_annotations_json_is_a_dataset(tmp_path):
    _write(tmp_path, "Mine", _records())
    dataset = RetrievalDataset(tmp_path, "Mine")
    imgs = tmp_path / "Mine" / "imgs"
    assert dataset.annotation_file == tmp_path / "Mine" / "annotations.json"
    assert dataset.splits == ("train", "val", "test")
    pairs = dataset.train_pairs("train")
    assert pairs.pids == [0, 1, 1]
    assert pairs.image_paths == [imgs / "cam1/a.jpg", imgs / "cam2/b.jpg", imgs / "cam2/b.jpg"]
    test = dataset.eval_set("test")
    assert (test.image_pids, test.image_paths, test.captions) == ([4], [imgs / "cam2/c.jpg"], ["The man in red."])
    assert dataset.eval_set("val").image_pids == [5]
    check_dataset_files(tmp_path, "Mine")
    assert load_config(None, [f"data.root={tmp_path}", "data.dataset=Mine", "eval.cross_domain=[Mine]"])


def test_a_set_without_splits_is_evaluation_only(tmp_path):
    records = [{k: v for k, v in r.items() if k != "split"} for r in _records()]
    _write(tmp_path, "Gallery", records)
    dataset = RetrievalDataset(tmp_path, "Gallery")
    assert dataset.splits == ("test",) and len(dataset.eval_set("test").image_paths) == 4
    with pytest.raises(
        DataError,
        match=r"annotations.json: no record has split 'train', so Gallery cannot be "
        r"trained on .*its records' splits are test .*"
        r"python test.py WEIGHTS data.dataset=Gallery",
    ):
        dataset.train_pairs("train")
    with pytest.raises(DataError, match=r"Gallery has no 'val' split; its splits are test \(a record without 'split'"):
        dataset.eval_set("val")


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.update(img_path="x.jpg"), "record 0: has both 'file_path' and 'img_path'; expected one image key"),
        (lambda r: r.pop("file_path"), r"record 0: missing key 'file_path' \(or 'img_path'\)"),
        (
            lambda r: r.update(split="dev"),
            r"record 0: key 'split' is 'dev'; expected one of train, val, test "
            r"\(or no 'split'",
        ),
        (lambda r: r.update(id="4"), "record 0: key 'id' should be int, got str"),
    ],
)
def test_bad_records_of_your_own_data_are_named(tmp_path, change, message):
    records = _records()
    change(records[0])
    _write(tmp_path, "Mine", records)
    with pytest.raises(DataError, match=message):
        RetrievalDataset(tmp_path, "Mine")


def test_missing_folder_file_or_name_say_what_was_expected(tmp_path):
    with pytest.raises(
        DataError,
        match=r"unknown dataset 'Mine'; expected one of CUHK-PEDES, .* your own dataset: "
        r".*Mine not found; expected .*Mine/annotations.json .*make_annotations",
    ):
        RetrievalDataset(tmp_path, "Mine")
    (tmp_path / "Mine").mkdir()
    with pytest.raises(
        DataError,
        match=r"annotation file .*Mine/annotations.json not found.*\"file_path\" \| "
        r"\"img_path\".*relative to it",
    ):
        check_dataset_files(tmp_path, "Mine")
    with pytest.raises(DataError, match=r"unknown dataset '../Mine'.*a folder name, not a path"):
        RetrievalDataset(tmp_path, "../Mine")
    with pytest.raises(Exception, match=r"data.dataset='my/Other': must be one of CUHK-PEDES.*a folder name"):
        load_config(None, [f"data.root={tmp_path}", "data.dataset=my/Other"])
    # a saved config names its data without needing it: the folder is checked when a run starts
    assert load_config(None, [f"data.root={tmp_path}", "data.dataset=Other"]).data.dataset == "Other"


SMALL = [*ONE_EPOCH_QUICKSTART, "eval.at_start=false"]


def test_readme_example_csv_to_trained_and_evaluated_model(tmp_path, capsys):
    """README "Your own data", on a small synthetic set: CSV -> annotations.json -> check ->
    one epoch -> test.py, export_features.py, visualize.py; and an evaluation-only set beside it."""
    data = tmp_path / "data"
    generate(data, num_train_ids=10, num_val_ids=2, num_test_ids=4, image_size=(96, 32), seed=2)
    source = json.loads((data / "Synthetic-PEDES" / "reid_raw.json").read_text())
    for name, with_splits in (("MyPeople", True), ("MyGallery", False)):
        (data / name).mkdir()
        (data / name / "imgs").symlink_to(data / "Synthetic-PEDES" / "imgs")
        with open(data / f"{name}.csv", "w", newline="") as handle:
            rows = csv.writer(handle)
            rows.writerow(["image", "caption", "id"])
            for record in source:
                for caption in record["captions"]:
                    rows.writerow([record["file_path"], caption, f"person_{record['id']}"])
        split = ["--split", "0.6", "0.2", "0.2"] if with_splits else []
        assert (
            make_annotations_main([str(data / f"{name}.csv"), "--root", str(data), "--name", name, "--quiet", *split])
            == 0
        )
        assert check_main([str(data), name, "--quiet", "--strict", "--text-length", "48"]) == 0
    run = tmp_path / "run"
    quickstart = ["--config", str(ROOT / "configs" / "quickstart.yaml"), *SMALL, f"data.root={data}"]
    assert (
        train_cli.main(
            [*quickstart, "data.dataset=MyPeople", "eval.cross_domain=[MyGallery]", f"train.output_dir={run}"]
        )
        == 0
    )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {(row["dataset"], row["split"]) for row in rows} == {("MyPeople", "test"), ("MyGallery", "test")}
    assert test_cli.main([str(run), "data.dataset=MyGallery", "--output", str(tmp_path / "gallery.json")]) == 0
    result = json.loads((tmp_path / "gallery.json").read_text())["results"]["MyGallery"]
    assert result["split"] == "test" and 0 <= result["t2i"]["R1"] <= 100
    assert (
        export_features.main(
            [str(run), "--dataset", "MyGallery", "--split", "test", "--output", str(tmp_path / "g.npz")]
        )
        == 0
    )
    with np.load(tmp_path / "g.npz") as arrays:
        assert arrays["image_features"].shape[0] == len(RetrievalDataset(data, "MyGallery").records)
    assert (
        visualize.main(
            [
                "retrieval",
                str(run),
                "--dataset",
                "MyGallery",
                "--queries",
                "0",
                "--output-dir",
                str(tmp_path / "figures"),
            ]
        )
        == 0
    )
    assert list((tmp_path / "figures").glob("retrieval_MyGallery_test_0.png"))
    message = user_error(
        capsys, train_cli.main, [*quickstart, "data.dataset=MyGallery", f"train.output_dir={tmp_path / 'run2'}"]
    )
    assert "no record has split 'train', so MyGallery cannot be trained on" in message
