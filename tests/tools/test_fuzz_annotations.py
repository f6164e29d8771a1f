"""Fuzzing the three annotation formats: any mutation either reads cleanly or raises the
project's own DataError; never another exception type, never a hang (a SIGALRM guard of
HANG_SECONDS per example: generous, so it only catches hangs, it never asserts speed).

Reproducible: the examples are derandomized (hypothesis seeds them from a digest of each test
function, not from the clock) and no example database is read or written, so every run, on
any machine, tries the same EXAMPLES mutations in the same order (checked below). A failure therefore comes back
by rerunning that test id, e.g.
    .venv/bin/python -m pytest "tests/tools/test_fuzz_annotations.py::test_byte_mutations_give_clear_errors[RSTPReid]"
and hypothesis prints the shrunk falsifying example with an ``@reproduce_failure(...)`` line
that replays it alone when pasted above the test.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs.datasets import BUILT_IN
from dataset_tools.check import check_dataset
from datasets.bases import tokenize_captions
from datasets.readers import DataError, RetrievalDataset

FORMATS = ("CUHK-PEDES", "ICFG-PEDES", "RSTPReid")
EXAMPLES = 100  # per test and format: 600 files a run (the same ones every run)
HANG_SECONDS = 120  # per example; a hang, not a slow machine
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)


class Hang(BaseException):
    """Raised by the alarm guard when one example runs for HANG_SECONDS. A BaseException, so
    no ``except Exception`` in the readers can turn it into a DataError: the test fails."""


@contextlib.contextmanager
def hang_guard(seconds: int = HANG_SECONDS):
    def _fire(signum, frame):
        raise Hang(f"one example ran for {seconds} s: the reader hangs")

    previous = signal.signal(signal.SIGALRM, _fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=8,
)


def valid_records(name: str, count: int = 6) -> list:
    layout = BUILT_IN[name]
    return [
        {
            "id": index // 2 + 1,
            layout.image_key: f"{layout.splits[index % len(layout.splits)]}/{index}.jpg",
            "captions": [f"a person in a red coat number {index}", "black bag"],
            "split": layout.splits[index % len(layout.splits)],
        }
        for index in range(count)
    ]


def read_everything(root: Path, name: str) -> None:
    """What training, evaluation and the checker do with an annotation file (no images)."""
    dataset = RetrievalDataset(root, name)
    dataset.statistics()
    for split in dataset.layout.splits:
        if any(record.split == split for record in dataset.records):
            pairs = dataset.train_pairs(split)
            tokenize_captions(pairs.captions, 16)
            dataset.eval_set(split)


def assert_only_clear_errors(name: str, payload: bytes) -> None:
    with hang_guard(), tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / name).mkdir()
        (root / name / BUILT_IN[name].annotation_files[0]).write_bytes(payload)
        try:
            read_everything(root, name)
        except DataError as error:
            assert str(error), "a DataError without a message"
        problems = check_dataset(root, name, show_progress=False)  # reports, never raises
        assert all(isinstance(problem, str) and problem for problem in problems)


@st.composite
def structural_mutation(draw, name: str) -> bytes:
    """Valid records with keys deleted, renamed or given arbitrary JSON values."""
    records = valid_records(name)
    for _ in range(draw(st.integers(1, 4))):
        record = records[draw(st.integers(0, len(records) - 1))]
        key = draw(st.sampled_from(sorted(record)))
        action = draw(st.sampled_from(["delete", "replace", "rename", "caption"]))
        if action == "delete":
            del record[key]
        elif action == "rename":
            record[key + draw(st.text(min_size=1, max_size=3))] = record.pop(key)
        elif action == "caption" and isinstance(record.get("captions"), list):
            record["captions"].append(draw(json_values | st.text(max_size=30)))
        else:
            record[key] = draw(json_values)
    top = draw(st.sampled_from(["list", "list", "list", "other"]))
    return json.dumps(records if top == "list" else draw(json_values)).encode()


@st.composite
def byte_mutation(draw, name: str) -> bytes:
    """The valid file's bytes truncated, with bytes inserted, overwritten or deleted."""
    data = bytearray(json.dumps(valid_records(name), indent=1).encode())
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["truncate", "insert", "overwrite", "delete"]))
        chunk = draw(st.binary(min_size=1, max_size=8))
        if action == "truncate":
            del data[position:]
        elif action == "insert":
            data[position:position] = chunk
        elif action == "overwrite":
            data[position : position + len(chunk)] = chunk
        else:
            del data[position : position + len(chunk)]
    return bytes(data)


@pytest.mark.parametrize("name", FORMATS)
@FUZZ
@given(data=st.data())
def test_structural_mutations_give_clear_errors(name, data):
    assert_only_clear_errors(name, data.draw(structural_mutation(name)))


@pytest.mark.parametrize("name", FORMATS)
@FUZZ
@given(data=st.data())
def test_byte_mutations_give_clear_errors(name, data):
    assert_only_clear_errors(name, data.draw(byte_mutation(name)))


def test_the_fuzzing_draws_the_same_examples_on_every_run():
    """What FUZZ promises: two runs of one test draw identical mutations, in order (here 20)."""

    def draw_all() -> list:
        drawn = []

        @settings(FUZZ, max_examples=20)
        @given(data=st.data())
        def record(data):
            drawn.append((data.draw(structural_mutation("ICFG-PEDES")), data.draw(byte_mutation("RSTPReid"))))

        record()
        return drawn

    first = draw_all()
    assert len(set(first)) > 1 and draw_all() == first


@pytest.mark.parametrize(
    "payload, fragment",
    [
        (b"[" * 200000 + b"]" * 200000, "nested too deeply"),
        (
            '[{"id": 1, "file_path": "a.jpg", "split": "train", "captions": ["\\ud800 coat"]}]'.encode(),
            "captions[0] is not valid Unicode",
        ),
        ('[{"id": 1, "file_path": "a\\u0000.jpg", "split": "train", "captions": ["coat"]}]'.encode(), "NUL character"),
        (b"\xff\xfe[]", "not UTF-8 text"),
    ],
)
def test_known_hostile_inputs(tmp_path, payload, fragment):
    (tmp_path / "CUHK-PEDES").mkdir()
    (tmp_path / "CUHK-PEDES" / "reid_raw.json").write_bytes(payload)
    with pytest.raises(DataError, match=re.escape(fragment)):
        read_everything(tmp_path, "CUHK-PEDES")


def test_the_hang_guard_fails_a_hanging_example():
    """The guard that replaced hypothesis' deadline does end a hang (here a 1 s guard on a
    10 s sleep, standing in for a reader that never returns) and restores the old handler."""
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(Hang, match="the reader hangs"):
        with hang_guard(1):
            time.sleep(10)
    assert signal.getsignal(signal.SIGALRM) is before and signal.alarm(0) == 0
