"""Caption checks of python -m datasets.check: warnings with counts, exit status only with --strict."""

from __future__ import annotations

import logging

import pytest
from data_fixtures import fixture_records, make_dataset

from dataset_tools.caption_checks import CaptionedImage, caption_warnings, normalise
from dataset_tools.check import check_dataset, check_dataset_and_captions
from dataset_tools.check import main as check_main

LONG = "a man in a red coat with a black backpack and blue jeans walking past a shop " * 3


def _images(*rows):
    return [CaptionedImage(index, pid, f"{index}.jpg", tuple(captions)) for index, (pid, captions) in enumerate(rows)]


def test_clean_captions_give_no_warning():
    images = _images(
        (1, ["A man in a red coat.", "He carries a black bag."]),
        (2, ["A woman in a blue dress.", "She has long hair."]),
    )
    assert caption_warnings(images, 77) == []


def test_each_kind_of_noise_is_counted():
    images = _images(
        (1, ["A person walking.", "a  person walking", "Man."]),  # shared with ids 2 and 3; duplicate; one word
        (2, ["A PERSON WALKING!", "A woman with a red umbrella."]),
        (3, ["a person walking", LONG]),
        (4, ["...", "A boy on a bike."]),  # no word at all
    )
    shared, duplicated, short, long = caption_warnings(images, 40)
    assert shared.startswith("1 distinct caption(s) are shared by different identities (3 identities involved")
    assert "(ids 1, 2, 3)" in shared
    assert duplicated.startswith("1 image(s) carry the same caption more than once (1 duplicate caption(s))")
    assert "record 0 (0.jpg): 'A person walking.' x2" in duplicated
    assert short.startswith("2 caption(s) are empty or one word long") and "'Man.'" in short and "'...'" in short
    assert long.startswith("1 of 9 caption(s) are longer than data.text_length=40 tokens")
    assert "record 2 captions[1]" in long


def test_truncation_count_follows_the_text_length():
    images = _images((1, ["a man in a red coat"]), (2, ["a woman in a long blue dress and white shoes"]))
    # 6 and 10 words -> 8 and 12 tokens with start and end
    assert caption_warnings(images, 12) == []
    assert caption_warnings(images, 11)[0].startswith("1 of 2 caption(s) are longer than data.text_length=11")
    assert caption_warnings(images, 7)[0].startswith("2 of 2 caption(s)")


def test_normal_form():
    assert normalise("  A Man\tin RED. ") == normalise("a man in red") == "a man in red"
    assert normalise("a man in red") != normalise("a man in blue")


def _noisy_copy(root):
    records = fixture_records("CUHK-PEDES")
    records[0]["captions"] = ["Someone walking.", "Someone walking"]  # duplicate on one image
    records[4]["captions"][0] = "someone walking"  # another identity: shared
    records[6]["captions"][1] = "Person"  # one word
    make_dataset(root, "CUHK-PEDES", records)


def test_check_reports_warnings_and_fails_only_when_strict(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="datasets.check")
    _noisy_copy(tmp_path)
    problems, warnings = check_dataset_and_captions(tmp_path, "CUHK-PEDES", show_progress=False)
    assert problems == [] and check_dataset(tmp_path, "CUHK-PEDES", show_progress=False) == []
    assert len(warnings) == 3
    assert check_main([str(tmp_path), "CUHK-PEDES", "--quiet"]) == 0
    assert "CUHK-PEDES: 0 problem(s), 3 caption warning(s)" in caplog.text
    assert "warning: 1 distinct caption(s) are shared by different identities" in caplog.text
    assert check_main([str(tmp_path), "CUHK-PEDES", "--quiet", "--strict"]) == 2
    assert check_main([str(tmp_path), "CUHK-PEDES", "--quiet", "--strict", "--text-length", "12"]) == 2


def test_clean_fixture_passes_strict_and_text_length_is_checked(tmp_path, capsys):
    make_dataset(tmp_path, "RSTPReid")
    assert check_main([str(tmp_path), "RSTPReid", "--quiet", "--strict"]) == 0
    assert check_main([str(tmp_path), "RSTPReid", "--quiet", "--strict", "--text-length", "8"]) == 2
    with pytest.raises(SystemExit) as caught:
        check_main([str(tmp_path), "RSTPReid", "--text-length", "0"])
    assert caught.value.code == 2 and "--text-length 0: expected a positive number" in capsys.readouterr().err


def test_malformed_records_are_still_reported_and_the_others_checked(tmp_path):
    records = fixture_records("CUHK-PEDES")
    records[1]["split"] = "dev"
    records[2]["captions"] = ["Word"]
    make_dataset(tmp_path, "CUHK-PEDES", records)
    problems, warnings = check_dataset_and_captions(tmp_path, "CUHK-PEDES", show_progress=False)
    assert len(problems) == 1 and "record 1: key 'split' is 'dev'" in problems[0]
    assert len(warnings) == 1 and "record 2 captions[0] 'Word'" in warnings[0]
