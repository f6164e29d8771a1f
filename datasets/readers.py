"""Annotation readers for CUHK-PEDES, ICFG-PEDES, RSTPReid, the synthetic set (docs/method.md,
"Data") and your own data (README, "Your own data").

All share one record format, ``{"id": int, <image key>: str, "captions": [str, ...],
"split": str}``, and differ in folder, annotation file name, image key and splits, so one
reader driven by a :class:`DatasetLayout` serves them all. Any name other than the four
built-in ones is your own dataset: ``ROOT/NAME/annotations.json`` with either image key
(``file_path`` or ``img_path``, relative to ``ROOT/NAME/imgs/``) and ``split`` optional
(a record without one is a test record, so a set without splits is evaluation-only).
A split can be viewed as training pairs (one per caption, identities remapped to 0..N-1)
or as an evaluation set (one gallery entry per image, one query per caption), whichever
split it is, so a model trained on one dataset can be evaluated on any split of another.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Sequence, Tuple

from prettytable import PrettyTable

from configs.datasets import DATASETS, DEFAULT_SPLIT, DatasetLayout, dataset_problem, layout_of
from configs.errors import UserError

logger = logging.getLogger(__name__)


class DataError(UserError, ValueError):
    """A dataset file or record is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Record:
    pid: int  # identity as written in the file
    image_path: Path
    captions: Tuple[str, ...]
    split: str


def get_layout(name: str) -> DatasetLayout:
    """A built-in dataset's layout, or that of your own dataset folder ``name``."""
    problem = dataset_problem(name)
    if problem:
        raise DataError(f"unknown dataset {name!r}; expected {problem}")
    return layout_of(name)


def _where_from(root: Path, layout: DatasetLayout) -> str:
    if layout.custom:
        return (
            f"expected {layout.describe(root)}; `python -m datasets.make_annotations CSV --root {root} "
            f'--name {layout.name}` writes it from a CSV of image,caption,id[,split] (README "Your own data")'
        )
    return (
        f"expected {layout.describe(root)}; set data.root to the folder holding {layout.name}/ "
        f"(obtain it from {layout.source})"
    )


def find_annotation_file(root: Path, layout: DatasetLayout) -> Path:
    folder = root / layout.name
    if not folder.is_dir() and layout.custom:
        raise DataError(
            f"unknown dataset {layout.name!r}; expected one of {', '.join(DATASETS)}, or your own "
            f"dataset: {folder} not found; {_where_from(root, layout)}"
        )
    if not folder.is_dir():
        raise DataError(f"dataset folder {folder} not found; {_where_from(root, layout)}")
    for file_name in layout.annotation_files:
        if (folder / file_name).is_file():
            return folder / file_name
    raise DataError(
        f"annotation file {folder / layout.annotation_files[0]} not found "
        f"(accepted names: {', '.join(layout.annotation_files)}); {_where_from(root, layout)}"
    )


def check_dataset_files(root: str | Path, name: str) -> None:
    """The dataset's annotation file and ``imgs/`` folder exist (no file is read): the check
    made before a run starts. A :class:`DataError` names the path, the key and the source."""
    layout = get_layout(name)
    find_annotation_file(Path(root), layout)
    images = Path(root) / name / "imgs"
    if not images.is_dir():
        raise DataError(f"image folder {images} not found; {_where_from(Path(root), layout)}")


def load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(
            f"{path}: malformed JSON at line {error.lineno} column {error.colno} (character {error.pos}): {error.msg}"
        ) from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text at byte {error.start}: {error.reason}") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply to be an annotation file (a list of flat records)") from None


def _text_problem(text: str) -> str:
    """Why ``text`` cannot be used as a caption or file name ("" when it can)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (lone surrogate escape)"
    return "is empty" if not text.strip() else ""


def image_key_of(record: dict, layout: DatasetLayout) -> str:
    """The first of the layout's image keys that the record has (for your own data file_path
    or img_path); the layout's first when it has none, to be reported missing."""
    return next((key for key in layout.image_keys if key in record), layout.image_key)


def split_of(record: dict) -> str:
    """The record's split; a record of your own data without one is a test record."""
    return record.get("split", DEFAULT_SPLIT)


def record_problems(index: int, record, layout: DatasetLayout) -> List[str]:
    """Every problem of one raw record, each naming its index and key (empty when valid)."""
    where = f"record {index}"
    if not isinstance(record, dict):
        return [f"{where}: expected an object, got {type(record).__name__}"]
    problems = []
    image_key = image_key_of(record, layout)
    expected = {"id": int, image_key: str, "captions": list, "split": str}
    for key, kind in expected.items():
        if key not in record:
            if key == "split" and layout.custom:
                continue  # your own data: no split = test
            named = repr(key)
            if key == image_key and len(layout.image_keys) > 1:  # missing: image_key is the layout's first
                named += f" (or {', '.join(map(repr, layout.image_keys[1:]))})"
            problems.append(f"{where}: missing key {named}")
        elif not isinstance(record[key], kind) or isinstance(record[key], bool):
            problems.append(f"{where}: key {key!r} should be {kind.__name__}, got {type(record[key]).__name__}")
    if len(layout.image_keys) > 1 and all(key in record for key in layout.image_keys):
        problems.append(f"{where}: has both {' and '.join(map(repr, layout.image_keys))}; expected one image key")
    if problems:
        return problems
    if split_of(record) not in layout.splits:
        absent = f" (or no 'split': {DEFAULT_SPLIT})" if layout.custom else ""
        problems.append(
            f"{where}: key 'split' is {record['split']!r}; expected one of {', '.join(layout.splits)}{absent}"
        )
    if not record["captions"]:
        problems.append(f"{where}: key 'captions' is an empty list")
    for position, caption in enumerate(record["captions"]):
        if not isinstance(caption, str):
            problems.append(f"{where}: captions[{position}] should be str, got {type(caption).__name__}")
        elif _text_problem(caption):
            problems.append(f"{where}: captions[{position}] {_text_problem(caption)}")
    image = record[image_key]
    if _text_problem(image) or "\0" in image:
        problems.append(f"{where}: key {image_key!r} {_text_problem(image) or 'holds a NUL character'}")
    return problems


def listing(problems: Sequence[str], limit: int = 10) -> str:
    """The first ``limit`` problems, one per indented line, then how many more there are."""
    more = f"\n  ... and {len(problems) - limit} more" if len(problems) > limit else ""
    return "\n  ".join(problems[:limit]) + more


def parse_records(raw, layout: DatasetLayout, source: Path) -> List[Record]:
    """Validated records; raises :class:`DataError` listing the first problems found."""
    if not isinstance(raw, list):
        raise DataError(f"{source}: expected a JSON list of records, got {type(raw).__name__}")
    problems = [problem for index, record in enumerate(raw) for problem in record_problems(index, record, layout)]
    if problems:
        raise DataError(f"{source}: {len(problems)} invalid record field(s):\n  {listing(problems)}")
    images = source.parent / "imgs"
    return [Record(r["id"], images / r[image_key_of(r, layout)], tuple(r["captions"]), split_of(r)) for r in raw]


@dataclass
class TrainPairs:
    """One entry per caption; ``pids`` are remapped to 0..num_classes-1 (sorted file ids)."""

    pids: List[int]
    image_ids: List[int]
    image_paths: List[Path]
    captions: List[str]
    num_classes: int


@dataclass
class EvalSet:
    """Gallery (one entry per image) and queries (one per caption), file identities, in the
    evaluation order; ``caption_images[q]`` is the gallery index of query q's own image."""

    image_pids: List[int]
    image_paths: List[Path]
    caption_pids: List[int]
    captions: List[str]
    caption_images: List[int]

    def captions_of(self, image: int) -> List[str]:
        return [caption for caption, own in zip(self.captions, self.caption_images) if own == image]


class RetrievalDataset:
    """One dataset's annotation, read and validated once, viewed by split."""

    def __init__(self, root: str | Path, name: str):
        self.root = Path(root)
        self.layout = get_layout(name)
        self.name = name
        self.annotation_file = find_annotation_file(self.root, self.layout)
        self.records = parse_records(load_json(self.annotation_file), self.layout, self.annotation_file)
        if self.layout.custom:  # your own data has the splits its records name
            named = {record.split for record in self.records}
            present = tuple(split for split in self.layout.splits if split in named)
            self.layout = replace(self.layout, splits=present)

    @property
    def splits(self) -> Tuple[str, ...]:
        """The splits: a built-in dataset's; for your own data, those its records name."""
        return self.layout.splits

    def split_records(self, split: str) -> List[Record]:
        if split not in self.layout.splits:
            note = f" (a record without 'split' is a {DEFAULT_SPLIT} record)" if self.layout.custom else ""
            raise DataError(
                f"{self.name} has no {split!r} split; its splits are "
                f"{', '.join(self.layout.splits) or 'none (no records)'}{note}"
            )
        records = [record for record in self.records if record.split == split]
        if not records:
            raise DataError(f"{self.annotation_file}: no record has split {split!r}")
        return records

    def train_pairs(self, split: str = "train") -> TrainPairs:
        if self.layout.custom and split not in self.splits:
            make = f"python -m datasets.make_annotations CSV --root {self.root} --name {self.name} --split 0.8 0.1 0.1"
            raise DataError(
                f"{self.annotation_file}: no record has split {split!r}, so {self.name} cannot be trained on "
                f"(data.train_split={split}); its records' splits are {', '.join(self.splits) or 'none'} (a record "
                f'without \'split\' is a {DEFAULT_SPLIT} record). Give the training records "split": "{split}" '
                f"(e.g. `{make}`), or only evaluate it: `python test.py WEIGHTS data.dataset={self.name}`"
            )
        records = self.split_records(split)
        remap = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
        pairs = TrainPairs([], [], [], [], len(remap))
        for image_id, record in enumerate(records):
            for caption in record.captions:
                pairs.pids.append(remap[record.pid])
                pairs.image_ids.append(image_id)
                pairs.image_paths.append(record.image_path)
                pairs.captions.append(caption)
        return pairs

    def eval_set(self, split: str = "test") -> EvalSet:
        records = self.split_records(split)
        captions = [(index, record.pid, caption) for index, record in enumerate(records) for caption in record.captions]
        return EvalSet(
            [r.pid for r in records],
            [r.image_path for r in records],
            [pid for _, pid, _ in captions],
            [caption for _, _, caption in captions],
            [index for index, _, _ in captions],
        )

    def statistics(self) -> PrettyTable:
        table = PrettyTable(["split", "ids", "images", "captions"], title=self.name)
        for split in self.splits:
            records = [r for r in self.records if r.split == split]
            table.add_row([split, len({r.pid for r in records}), len(records), sum(len(r.captions) for r in records)])
        return table


def log_statistics(datasets: Sequence[RetrievalDataset]) -> None:
    for dataset in datasets:
        logger.info("%s (%s)\n%s", dataset.name, dataset.annotation_file, dataset.statistics())
