"""Synthetic-PEDES: determinism, CUHK-PEDES format, identity design, captions, skip/regenerate."""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import user_error
from PIL import Image

from dataset_tools.synthetic import (
    ANNOTATION,
    ATTRIBUTES,
    DATASET_NAME,
    META,
    generate,
    main,
    make_captions,
    sample_identities,
    tokenize_words,
)

TINY = dict(num_train_ids=4, num_val_ids=2, num_test_ids=3, images_per_id=(1, 3), image_size=(48, 16))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("tiny"), seed=3, **TINY)


def _records(folder: Path) -> list:
    return json.loads((folder / ANNOTATION).read_text(encoding="utf-8"))


def _image_bytes(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted((folder / "imgs").rglob("*.jpg"))}


def test_deterministic_for_a_seed_whatever_the_workers(tiny, tmp_path):
    again = generate(tmp_path / "again", seed=3, workers=2, **TINY)
    assert (again / ANNOTATION).read_bytes() == (tiny / ANNOTATION).read_bytes()
    assert _image_bytes(again) == _image_bytes(tiny)
    other = generate(tmp_path / "other", seed=4, **TINY)
    assert _records(other) != _records(tiny)
    shared = set(_image_bytes(other)) & set(_image_bytes(tiny))
    assert shared and all(_image_bytes(other)[k] != _image_bytes(tiny)[k] for k in shared)


def test_cuhk_pedes_format(tiny):
    assert tiny.name == DATASET_NAME
    records = _records(tiny)
    ids_of = {split: set() for split in ("train", "val", "test")}
    for r in records:
        assert list(r) == ["id", "file_path", "captions", "split", "processed_tokens"]
        assert isinstance(r["id"], int) and r["split"] in ids_of
        assert re.fullmatch(rf"{r['split']}/{r['id']}_\d+\.jpg", r["file_path"])
        assert len(r["captions"]) == 2 and all(isinstance(c, str) and c.strip() for c in r["captions"])
        assert r["processed_tokens"] == [tokenize_words(c) for c in r["captions"]]
        assert all(t == t.lower() and t.isascii() for tokens in r["processed_tokens"] for t in tokens)
        with Image.open(tiny / "imgs" / r["file_path"]) as image:
            assert image.format == "JPEG" and image.mode == "RGB" and image.size == (16, 48)
        ids_of[r["split"]].add(r["id"])
    assert [len(ids_of[s]) for s in ("train", "val", "test")] == [4, 2, 3]
    assert sorted(ids_of["train"]) == [1, 2, 3, 4] and sorted(ids_of["val"]) == [5, 6]
    assert sorted(ids_of["test"]) == [7, 8, 9]
    per_id = Counter(r["id"] for r in records)
    assert all(1 <= n <= 3 for n in per_id.values())
    assert len({r["file_path"] for r in records}) == len(records)
    assert len(list((tiny / "imgs").rglob("*.jpg"))) == len(records)


def test_identities_are_unique_combinations_of_shared_values():
    rng, taken = np.random.default_rng(0), set()
    train, test = sample_identities(150, rng, taken), sample_identities(60, rng, taken)
    keys = [p.key() for p in train + test]
    assert len(set(keys)) == len(keys)  # unique over the splits too
    assert len(ATTRIBUTES) == len(keys[0])
    for people in (train, test):
        for name in ATTRIBUTES:
            counts = Counter(getattr(p, name) for p in people)
            assert min(counts.values()) >= 2, (name, counts)  # no single value identifies a person
            if name != "inner_colour":
                assert len(counts) >= 2, name
    assert len({p.upper_colour for p in train}) >= 8
    # Garment rules: dresses only on women and without a lower garment; absent values are None.
    for p in train + test:
        assert (p.upper_type == "dress") == (p.lower_type is None) == (p.lower_colour is None)
        assert p.upper_type != "dress" or p.gender == "woman"
        assert (p.hair_style == "bald") == (p.hair_colour is None)
        assert (p.bag_type == "none") == (p.bag_colour is None)
        assert (p.upper_type == "jacket") == (p.inner_colour is not None)


def _words(caption: str) -> set:
    return set(tokenize_words(caption.replace("gray", "grey")))


def test_captions_mention_the_discriminative_attributes():
    rng = np.random.default_rng(1)
    for i, person in enumerate(sample_identities(60, rng)):
        captions = make_captions(person, np.random.default_rng([1, i]))
        assert len(captions) == 2 and captions[0] != captions[1]
        for caption in captions:
            words = _words(caption)
            assert caption[0].isupper() and caption.endswith(".") and "  " not in caption
            assert not re.search(r"\ba [aeiou]", caption), caption
            gender_words = {"man", "guy", "male", "he"} if person.gender == "man" else {"woman", "lady", "girl", "she"}
            assert person.upper_colour in words and gender_words & words, caption
            for colour in (person.lower_colour, person.hair_colour, person.bag_colour):
                assert colour is None or colour in words, (colour, caption)
        mentions_shoes = [
            f"{person.shoes_colour} shoes" in c.replace("gray", "grey")
            or f"{person.shoes_colour} sneakers" in c.replace("gray", "grey")
            for c in captions
        ]
        assert any(mentions_shoes), captions  # at most one caption leaves the shoes out


def test_skip_when_complete_and_regenerate_when_parameters_differ(tmp_path, caplog):
    params = dict(TINY, num_train_ids=3, num_val_ids=1, num_test_ids=1)
    folder = generate(tmp_path, seed=0, **params)
    stamp = (folder / ANNOTATION).stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="datasets.synthetic"):
        assert generate(tmp_path, seed=0, **params) == folder
    assert "not generating it again" in caplog.text
    assert (folder / ANNOTATION).stat().st_mtime_ns == stamp
    assert json.loads((folder / META).read_text())["params"]["seed"] == 0

    generate(tmp_path, seed=0, **dict(params, num_train_ids=2))  # fewer ids: stale images go away
    records = _records(folder)
    assert max(r["id"] for r in records) == 4
    assert len(list((folder / "imgs").rglob("*.jpg"))) == len(records)
    assert json.loads((folder / META).read_text())["params"]["num_train_ids"] == 2

    (folder / ANNOTATION).unlink()  # an interrupted run leaves no annotation: generate again
    generate(tmp_path, seed=0, **dict(params, num_train_ids=2))
    assert _records(folder) == records
    assert not list(folder.glob("*.tmp"))


def test_invalid_parameters_are_errors(tmp_path):
    with pytest.raises(ValueError, match="3 x width"):
        generate(tmp_path, image_size=(64, 64))
    with pytest.raises(ValueError, match="images_per_id"):
        generate(tmp_path, images_per_id=(3, 2))
    with pytest.raises(ValueError, match="identity counts"):
        generate(tmp_path, num_train_ids=0)
    assert not (tmp_path / DATASET_NAME).exists()


def test_command_line(tmp_path, capsys):
    assert (
        main(
            [
                "--root",
                str(tmp_path),
                "--train-ids",
                "2",
                "--val-ids",
                "0",
                "--test-ids",
                "1",
                "--images-per-id",
                "1",
                "1",
                "--image-size",
                "48",
                "16",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    records = _records(tmp_path / DATASET_NAME)
    assert [r["split"] for r in records] == ["train", "train", "test"] and [r["id"] for r in records] == [1, 2, 3]


def test_command_line_mistake_is_one_error_line(tmp_path, capsys):
    assert "3 x width" in user_error(capsys, main, ["--root", str(tmp_path), "--image-size", "40", "16"])
