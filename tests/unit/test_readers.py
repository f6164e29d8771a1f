"""Readers of the three datasets (and the synthetic one) on fixture folders in the real formats.

Every annotation file name and image key here is a literal of docs/method.md ("Data"), either
written in the test or taken from tests/data_fixtures.FILES, never from datasets.readers.LAYOUTS:
a wrong name or key in the code fails these tests.
"""

from __future__ import annotations

import json

import pytest
from data_fixtures import FIXTURES, IMAGES_PER_ID, fixture_records, make_dataset, write_dataset

from dataset_tools.check import check_dataset
from dataset_tools.check import main as check_main
from datasets.readers import DataError, RetrievalDataset


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_split_counts_and_identity_remapping(tmp_path, name):
    make_dataset(tmp_path, name)
    first_id, captions, splits = FIXTURES[name]
    dataset = RetrievalDataset(tmp_path, name)
    pairs = dataset.train_pairs("train")
    assert pairs.num_classes == splits["train"]
    assert sorted(set(pairs.pids)) == list(range(splits["train"]))  # 0-based, contiguous
    assert len(pairs.captions) == splits["train"] * IMAGES_PER_ID * captions
    assert max(pairs.image_ids) + 1 == splits["train"] * IMAGES_PER_ID
    # The remapping keeps the file's order of identities: CUHK-PEDES id 1 -> 0.
    records = [r for r in fixture_records(name) if r["split"] == "train"]
    assert pairs.captions[0] == records[0]["captions"][0] and pairs.pids[0] == records[0]["id"] - first_id
    for path in pairs.image_paths:
        assert path.is_file()


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_gallery_and_queries_of_every_split(tmp_path, name):
    make_dataset(tmp_path, name)
    _, captions, splits = FIXTURES[name]
    dataset = RetrievalDataset(tmp_path, name)
    for split, identities in splits.items():
        eval_set = dataset.eval_set(split)
        assert len(eval_set.image_paths) == identities * IMAGES_PER_ID  # one entry per image
        assert len(eval_set.captions) == identities * IMAGES_PER_ID * captions  # one query per caption
        assert set(eval_set.caption_pids) == set(eval_set.image_pids)
        assert len(set(eval_set.image_pids)) == identities
    table = dataset.statistics().get_string()
    assert all(split in table for split in splits)


# ---- each dataset's own file name and image key, written out in the test ----------------------


def _train_and_eval(root, name):
    dataset = RetrievalDataset(root, name)
    assert check_dataset(root, name, show_progress=False) == []  # the checker finds every image
    return dataset, dataset.train_pairs("train")


def test_cuhk_pedes_reads_reid_raw_json_with_file_path(tmp_path):
    """CUHK-PEDES/reid_raw.json, key file_path; its train ids are 1-based and become 0-based."""
    records = [
        {
            "id": 1,
            "file_path": "CUHK01/0001001.png",
            "captions": ["A man in a red coat.", "He has a bag."],
            "split": "train",
        },
        {"id": 1, "file_path": "CUHK01/0001002.png", "captions": ["The man walks away."], "split": "train"},
        {"id": 2, "file_path": "CUHK03/2_1.png", "captions": ["A girl in blue jeans."], "split": "train"},
        {"id": 3, "file_path": "Market/0003_c1.jpg", "captions": ["A boy on a bike."], "split": "val"},
        {
            "id": 4,
            "file_path": "test_query/p4_1.jpg",
            "captions": ["A woman in black.", "Black dress."],
            "split": "test",
        },
        {"id": 4, "file_path": "test_query/p4_2.jpg", "captions": ["She wears black."], "split": "test"},
    ]
    write_dataset(tmp_path / "CUHK-PEDES", "reid_raw.json", "file_path", records)
    dataset, pairs = _train_and_eval(tmp_path, "CUHK-PEDES")
    imgs = tmp_path / "CUHK-PEDES" / "imgs"
    assert dataset.annotation_file == tmp_path / "CUHK-PEDES" / "reid_raw.json"
    assert pairs.num_classes == 2 and pairs.pids == [0, 0, 0, 1]  # file ids 1, 1, 1, 2
    assert pairs.image_ids == [0, 0, 1, 2]
    assert pairs.image_paths == [imgs / "CUHK01/0001001.png"] * 2 + [
        imgs / "CUHK01/0001002.png",
        imgs / "CUHK03/2_1.png",
    ]
    assert pairs.captions == ["A man in a red coat.", "He has a bag.", "The man walks away.", "A girl in blue jeans."]
    val = dataset.eval_set("val")
    assert (val.image_pids, val.image_paths) == ([3], [imgs / "Market/0003_c1.jpg"])
    assert (val.caption_pids, val.captions) == ([3], ["A boy on a bike."])
    test = dataset.eval_set("test")  # one gallery entry per image, one query per caption, file ids
    assert test.image_pids == [4, 4] and test.image_paths == [
        imgs / "test_query/p4_1.jpg",
        imgs / "test_query/p4_2.jpg",
    ]
    assert test.caption_pids == [4, 4, 4]
    assert test.captions == ["A woman in black.", "Black dress.", "She wears black."]


@pytest.mark.parametrize("file_name", ["ICFG-PEDES.json", "ICFG_PEDES.json"])
def test_icfg_pedes_reads_either_file_name_with_file_path(tmp_path, file_name):
    """ICFG-PEDES/ICFG-PEDES.json (or ICFG_PEDES.json), key file_path, splits train and test."""
    records = [
        {"id": 10, "file_path": "train/0010/0010_001.jpg", "captions": ["A man with a cap."], "split": "train"},
        {"id": 12, "file_path": "train/0012/0012_001.jpg", "captions": ["A lady in white."], "split": "train"},
        {"id": 12, "file_path": "train/0012/0012_002.jpg", "captions": ["White shirt lady."], "split": "train"},
        {"id": 3102, "file_path": "test/3102/3102_001.jpg", "captions": ["A child running."], "split": "test"},
    ]
    write_dataset(tmp_path / "ICFG-PEDES", file_name, "file_path", records)
    dataset, pairs = _train_and_eval(tmp_path, "ICFG-PEDES")
    imgs = tmp_path / "ICFG-PEDES" / "imgs"
    assert dataset.annotation_file == tmp_path / "ICFG-PEDES" / file_name
    assert pairs.num_classes == 2 and pairs.pids == [0, 1, 1]  # ids 10, 12 remapped to 0..N-1
    assert pairs.image_paths == [
        imgs / "train/0010/0010_001.jpg",
        imgs / "train/0012/0012_001.jpg",
        imgs / "train/0012/0012_002.jpg",
    ]
    assert pairs.captions == ["A man with a cap.", "A lady in white.", "White shirt lady."]
    test = dataset.eval_set("test")
    assert (test.image_pids, test.image_paths) == ([3102], [imgs / "test/3102/3102_001.jpg"])
    assert (test.caption_pids, test.captions) == ([3102], ["A child running."])


def test_rstpreid_reads_data_captions_json_with_img_path(tmp_path):
    """RSTPReid/data_captions.json, key img_path; train ids remapped to 0..N-1."""
    records = [
        {
            "id": 0,
            "img_path": "0000_c14_0031.jpg",
            "captions": ["A man in grey.", "Grey jacket man."],
            "split": "train",
        },
        {
            "id": 5,
            "img_path": "0005_c7_0012.jpg",
            "captions": ["A woman with an umbrella.", "Red umbrella."],
            "split": "train",
        },
        {"id": 3701, "img_path": "3701_c2_0001.jpg", "captions": ["A man on a phone.", "Phone call."], "split": "val"},
        {
            "id": 3901,
            "img_path": "3901_c9_0004.jpg",
            "captions": ["A girl in a skirt.", "Pink skirt."],
            "split": "test",
        },
    ]
    write_dataset(tmp_path / "RSTPReid", "data_captions.json", "img_path", records)
    dataset, pairs = _train_and_eval(tmp_path, "RSTPReid")
    imgs = tmp_path / "RSTPReid" / "imgs"
    assert dataset.annotation_file == tmp_path / "RSTPReid" / "data_captions.json"
    assert pairs.num_classes == 2 and pairs.pids == [0, 0, 1, 1] and pairs.image_ids == [0, 0, 1, 1]
    assert pairs.image_paths == [imgs / "0000_c14_0031.jpg"] * 2 + [imgs / "0005_c7_0012.jpg"] * 2
    assert pairs.captions == ["A man in grey.", "Grey jacket man.", "A woman with an umbrella.", "Red umbrella."]
    for split, pid, path, captions in (
        ("val", 3701, "3701_c2_0001.jpg", ["A man on a phone.", "Phone call."]),
        ("test", 3901, "3901_c9_0004.jpg", ["A girl in a skirt.", "Pink skirt."]),
    ):
        eval_set = dataset.eval_set(split)
        assert (eval_set.image_pids, eval_set.image_paths) == ([pid], [imgs / path])
        assert (eval_set.caption_pids, eval_set.captions) == ([pid, pid], captions)


@pytest.mark.parametrize(
    "name, file_name, wrong_key, right_key",
    [
        ("CUHK-PEDES", "reid_raw.json", "img_path", "file_path"),
        ("ICFG-PEDES", "ICFG-PEDES.json", "img_path", "file_path"),
        ("RSTPReid", "data_captions.json", "file_path", "img_path"),
    ],
)
def test_the_other_datasets_image_key_is_refused(tmp_path, name, file_name, wrong_key, right_key):
    """Each reader wants its own key: records keyed like another dataset name the missing key."""
    record = {"id": 1, wrong_key: "a.jpg", "captions": ["A person."], "split": "train"}
    write_dataset(tmp_path / name, file_name, wrong_key, [record])
    with pytest.raises(DataError, match=f"record 0: missing key '{right_key}'"):
        RetrievalDataset(tmp_path, name)


def test_missing_split_is_named(tmp_path):
    make_dataset(tmp_path, "ICFG-PEDES")
    with pytest.raises(DataError, match="ICFG-PEDES has no 'val' split; its splits are train, test"):
        RetrievalDataset(tmp_path, "ICFG-PEDES").eval_set("val")


def test_missing_folder_names_path_and_layout(tmp_path):
    with pytest.raises(DataError, match=r"dataset folder .*CUHK-PEDES not found; expected .*reid_raw.json"):
        RetrievalDataset(tmp_path, "CUHK-PEDES")


def test_missing_annotation_file(tmp_path):
    (tmp_path / "RSTPReid").mkdir()
    with pytest.raises(DataError, match=r"annotation file .*data_captions.json not found.*img_path"):
        RetrievalDataset(tmp_path, "RSTPReid")


def test_unknown_dataset_name(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'CUHK'; expected one of CUHK-PEDES"):
        RetrievalDataset(tmp_path, "CUHK")


def test_malformed_json_names_file_and_position(tmp_path):
    folder = make_dataset(tmp_path, "CUHK-PEDES")
    (folder / "reid_raw.json").write_text('[{"id": 1,\n "file_path": "a.jpg",, }]')
    with pytest.raises(DataError, match=r"reid_raw.json: malformed JSON at line 2 column 23"):
        RetrievalDataset(tmp_path, "CUHK-PEDES")


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda r: r.pop("captions"), "record 3: missing key 'captions'"),
        (lambda r: r.update(id="7"), "record 3: key 'id' should be int, got str"),
        (lambda r: r.update(id=True), "record 3: key 'id' should be int, got bool"),
        (lambda r: r.update(file_path=["x.jpg"]), "record 3: key 'file_path' should be str, got list"),
        (lambda r: r.update(captions=[]), "record 3: key 'captions' is an empty list"),
        (lambda r: r.update(captions=["ok", "  "]), r"record 3: captions\[1\] is empty"),
        (lambda r: r.update(captions=["ok", 5]), r"record 3: captions\[1\] should be str, got int"),
        (lambda r: r.update(split="dev"), "record 3: key 'split' is 'dev'; expected one of train, val, test"),
    ],
)
def test_bad_record_names_index_and_key(tmp_path, mutate, message):
    records = fixture_records("CUHK-PEDES")
    mutate(records[3])
    make_dataset(tmp_path, "CUHK-PEDES", records)
    with pytest.raises(DataError, match=message):
        RetrievalDataset(tmp_path, "CUHK-PEDES")
    assert any(message.replace("\\", "") in p for p in check_dataset(tmp_path, "CUHK-PEDES", show_progress=False))


def test_top_level_not_a_list(tmp_path):
    folder = make_dataset(tmp_path, "RSTPReid")
    (folder / "data_captions.json").write_text(json.dumps({"id": 1}))
    with pytest.raises(DataError, match="data_captions.json: expected a JSON list of records, got dict"):
        RetrievalDataset(tmp_path, "RSTPReid")


def test_checker_reports_every_problem_and_exit_status(tmp_path, capsys):
    folder = make_dataset(tmp_path, "RSTPReid")
    assert check_main([str(tmp_path), "RSTPReid", "--quiet"]) == 0
    records = fixture_records("RSTPReid")
    (folder / "imgs" / records[0]["img_path"]).unlink()
    (folder / "imgs" / records[1]["img_path"]).write_bytes(b"not a jpeg")
    problems = check_dataset(tmp_path, "RSTPReid", show_progress=False)
    assert len(problems) == 2
    assert "record 0: image file" in problems[0] and "not found" in problems[0]
    assert "record 1: image file" in problems[1] and "cannot be decoded" in problems[1]
    assert check_main([str(tmp_path), "RSTPReid", "--quiet"]) == 2


def test_checker_reports_malformed_records_and_broken_images_in_one_run(tmp_path, capsys):
    """One run lists the malformed records and the missing/unreadable images of the others
    (it once stopped at the records and never looked at the images)."""
    records = fixture_records("CUHK-PEDES")
    records[2]["split"] = "dev"
    del records[4]["captions"]
    folder = make_dataset(tmp_path, "CUHK-PEDES", records)
    (folder / "imgs" / records[0]["file_path"]).unlink()
    (folder / "imgs" / records[1]["file_path"]).write_bytes(b"not a jpeg")
    (folder / "imgs" / records[2]["file_path"]).unlink()  # the malformed record's image is not checked
    problems = check_dataset(tmp_path, "CUHK-PEDES", show_progress=False)
    assert len(problems) == 4, problems
    assert "record 2: key 'split' is 'dev'" in problems[0] and "record 4: missing key 'captions'" in problems[1]
    assert "record 0: image file" in problems[2] and "not found" in problems[2]
    assert "record 1: image file" in problems[3] and "cannot be decoded" in problems[3]
    assert check_main([str(tmp_path), "CUHK-PEDES", "--quiet"]) == 2


def test_checker_on_a_missing_dataset_names_the_key_and_the_source(tmp_path):
    problems = check_dataset(tmp_path, "RSTPReid", show_progress=False)
    assert len(problems) == 1 and f"dataset folder {tmp_path}/RSTPReid not found" in problems[0]
    assert "set data.root" in problems[0] and "NjtechCVLab/RSTPReid-Dataset" in problems[0]
    assert check_main([str(tmp_path), "RSTPReid", "--quiet"]) == 2
