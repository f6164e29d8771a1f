"""python -m datasets.make_annotations: a CSV of image,caption,id[,split] -> ROOT/NAME/annotations.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import user_error
from data_fixtures import write_image

from dataset_tools.make_annotations import main, make_annotations, parse_id, split_identities
from datasets.readers import DataError, RetrievalDataset


def _folder(root: Path, name: str = "Mine", images=("a.jpg", "b.jpg", "c/d.jpg")) -> Path:
    for index, image in enumerate(images):
        write_image(root / name / "imgs" / image, index)
    return root / name


def _csv(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_rows_become_records_with_their_captions_ids_and_splits(tmp_path):
    _folder(tmp_path)
    table = _csv(
        tmp_path / "people.csv",
        "id,image,caption,split,notes\n"
        '7,a.jpg,"A man, in red.",train,x\n'
        "7,a.jpg,He carries a bag.,train,\n"
        "3,c/d.jpg,A woman in blue.,,\n"
        "7,b.jpg,The man walks.,train,\n",
    )
    target = make_annotations(table, tmp_path, "Mine", show_progress=False)
    assert target == tmp_path / "Mine" / "annotations.json"
    assert json.loads(target.read_text()) == [
        {"id": 7, "file_path": "a.jpg", "captions": ["A man, in red.", "He carries a bag."], "split": "train"},
        {"id": 3, "file_path": "c/d.jpg", "captions": ["A woman in blue."]},  # empty split: a test record
        {"id": 7, "file_path": "b.jpg", "captions": ["The man walks."], "split": "train"},
    ]
    dataset = RetrievalDataset(tmp_path, "Mine")
    assert dataset.splits == ("train", "test")
    assert dataset.eval_set("test").image_pids == [3]


def test_names_are_numbered_in_natural_order_and_kept(tmp_path):
    _folder(tmp_path)
    table = _csv(
        tmp_path / "people.tsv",
        "image\tcaption\tid\n"
        "a.jpg\tA man in red.\tperson_10\nb.jpg\tA man in green.\tperson_2\nc/d.jpg\tA girl.\tperson_2\n",
    )
    records = json.loads(make_annotations(table, tmp_path, "Mine", show_progress=False).read_text())
    assert [(r["id"], r["name"]) for r in records] == [(1, "person_10"), (0, "person_2"), (0, "person_2")]
    assert all("split" not in r for r in records)  # no split column, no --split: evaluation only


@pytest.mark.parametrize("text, message", [("3", 3), ("-2", -2), ("007", 7), (" bob ", "bob"), ("p-1.5a", "p-1.5a")])
def test_ids_are_integers_or_names(text, message):
    assert parse_id(text) == message


@pytest.mark.parametrize("text", ["", "  ", "3.0", "1e3", "nan"])
def test_ids_that_are_neither_integers_nor_names_are_refused(text):
    with pytest.raises(ValueError, match="expected an integer or a name"):
        parse_id(text)


@pytest.mark.parametrize(
    "rows, message",
    [
        ("a.jpg,,1\n", "line 2: empty caption for image 'a.jpg'"),
        ("a.jpg,A man.,1\nb.jpg,A man.,3.0\n", "line 3: id '3.0' is a number but not an integer"),
        ("a.jpg,A man.,\n", "line 2: id is empty"),
        ("missing.jpg,A man.,1\n", "line 2: image file .*missing.jpg not found"),
        ("bad.jpg,A man.,1\n", "line 2: image file .*bad.jpg cannot be decoded"),
        (",A man.,1\n", "line 2: image path is empty"),
        ("../a.jpg,A man.,1\n", "line 2: image path '../a.jpg' must be relative to the dataset's imgs/ folder"),
        ("a.jpg,A man.,1\na.jpg,A woman.,2\n", "line 3: image 'a.jpg' has id 2 here but 1 on line 2"),
        ("a.jpg,A man.\n", "line 2: 2 field\\(s\\); expected 3"),
    ],
)
def test_bad_rows_are_refused_naming_the_line_and_nothing_is_written(tmp_path, rows, message):
    folder = _folder(tmp_path)
    (folder / "imgs" / "bad.jpg").write_bytes(b"not a jpeg")
    table = _csv(tmp_path / "people.csv", "image,caption,id\n" + rows)
    with pytest.raises(DataError, match=message):
        make_annotations(table, tmp_path, "Mine", show_progress=False)
    assert not (folder / "annotations.json").exists()


def test_every_bad_row_is_listed_at_once(tmp_path):
    _folder(tmp_path)
    table = _csv(
        tmp_path / "people.csv",
        "image,caption,id,split\na.jpg,,1,train\nb.jpg,A man.,x.5e1,dev\nnope.jpg,A man.,4,test\n",
    )
    with pytest.raises(DataError) as caught:
        make_annotations(table, tmp_path, "Mine", show_progress=False)
    text = str(caught.value)
    assert text.startswith(f"{table}: 3 problem(s), nothing written")
    for fragment in (
        "line 2: empty caption",
        "line 3: split 'dev'; expected one of train, val, test",
        "line 4: image file",
    ):
        assert fragment in text, text


@pytest.mark.parametrize("header", ["image,text,id", "image,caption", "image,caption,id,id"])
def test_a_header_without_the_columns_is_refused(tmp_path, header):
    _folder(tmp_path)
    table = _csv(tmp_path / "people.csv", header + "\na.jpg,A man.,1\n")
    with pytest.raises(DataError, match="line 1: the header .*expected a header naming the columns image, caption, id"):
        make_annotations(table, tmp_path, "Mine", show_progress=False)


def test_seeded_split_by_identity(tmp_path):
    identities = list(range(50)) + [f"name{i}" for i in range(50)]
    splits = split_identities(identities, [0.8, 0.1, 0.1], seed=3)
    assert set(splits) == set(identities)  # each identity in exactly one split
    assert sorted(splits.values()).count("train") == 80 and list(splits.values()).count("val") == 10
    assert splits == split_identities(list(reversed(identities)), [0.8, 0.1, 0.1], seed=3)  # order-free
    assert splits != split_identities(identities, [0.8, 0.1, 0.1], seed=4)
    small = split_identities([1, 2, 3, 4, 5], [0.8, 0.1, 0.1], seed=0)  # rounding never empties a split
    assert sorted(small.values()) == ["test", "train", "train", "train", "val"]
    with pytest.raises(DataError, match="2 identities cannot fill 3 non-empty splits"):
        split_identities([1, 2], [0.8, 0.1, 0.1], seed=0)


def test_split_option_keeps_each_identity_in_one_split(tmp_path):
    images = [f"{pid}_{shot}.jpg" for pid in range(10) for shot in range(2)]
    _folder(tmp_path, images=images)
    table = _csv(
        tmp_path / "people.csv",
        "image,caption,id\n" + "".join(f"{image},person {image[0]} view {image[2]}.,{image[0]}\n" for image in images),
    )
    assert main([str(table), "--root", str(tmp_path), "--name", "Mine", "--split", "0.6", "0.2", "0.2", "--quiet"]) == 0
    records = json.loads((tmp_path / "Mine" / "annotations.json").read_text())
    by_id = {}
    for record in records:
        by_id.setdefault(record["id"], set()).add(record["split"])
    assert all(len(splits) == 1 for splits in by_id.values())
    assert sorted(s for (s,) in by_id.values()) == ["test"] * 2 + ["train"] * 6 + ["val"] * 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    _folder(tmp_path)
    table = _csv(tmp_path / "people.csv", "image,caption,id,split\na.jpg,A man.,1,train\n")
    base = [str(table), "--root", str(tmp_path), "--quiet"]
    assert "--name 'CUHK-PEDES': a built-in dataset's name" in user_error(capsys, main, base + ["--name", "CUHK-PEDES"])
    assert "image folder" in user_error(capsys, main, base + ["--name", "Other"])
    assert "has a split column and --split was given" in user_error(
        capsys, main, base + ["--name", "Mine", "--split", "0.5", "0.25", "0.25"]
    )
    assert main(base + ["--name", "Mine"]) == 0
    exists = user_error(capsys, main, base + ["--name", "Mine"])
    assert "annotations.json already exists; --overwrite replaces it" in exists
    assert main(base + ["--name", "Mine", "--overwrite"]) == 0
    with pytest.raises(SystemExit) as caught:
        main(base + ["--name", "Mine", "--split", "0.5", "0.5", "0.5"])
    assert caught.value.code == 2 and "summing to 1" in capsys.readouterr().err
