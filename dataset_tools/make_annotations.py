"""Write your own dataset's annotation from a CSV:
``python -m datasets.make_annotations CSV --root ROOT --name NAME [--split 0.8 0.1 0.1]``.

The CSV (or TSV: a ``.tsv`` / ``.tab`` file, or a header with tabs and no commas) has a
header naming the columns ``image``, ``caption``, ``id`` and optionally ``split`` (other
columns are ignored), and one row per caption: an image with several captions has several
rows. Image paths are relative to ``ROOT/NAME/imgs/``. An id is an integer or a name
(names are numbered 0..N-1 in natural order; the record keeps the name under ``"name"``);
a split is ``train``, ``val``, ``test`` or empty. ``--split TRAIN VAL TEST`` draws the
splits instead, by identity (seeded by ``--seed``), so that no identity is in two splits.
A record without a split is a test record: a CSV without splits is an evaluation-only set.

It refuses, naming the line: a missing column, a row of the wrong length, an empty image
path or caption, an id that is neither an integer nor a name (empty, or a number such as
``3.0``), an unknown split, one image given two ids or two splits, and every image that is
missing or cannot be decoded. Nothing is written then. Otherwise it writes
``ROOT/NAME/annotations.json`` (the common record format, key ``file_path``) and prints
the split counts; ``python -m datasets.check ROOT NAME`` checks the result.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import random
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Dict, List, Optional, Sequence, Tuple, Union

from configs.datasets import CUSTOM_ANNOTATION, DATASETS, SPLITS, dataset_name_problem
from dataset_tools.check import image_problems
from datasets.readers import DataError, RetrievalDataset, listing
from utils.cli import describe, report_user_errors
from utils.io import write_text_atomic

logger = logging.getLogger("datasets.make_annotations")  # the command's name, as users type it

REQUIRED = ("image", "caption", "id")
OPTIONAL = ("split",)
_INTEGER = re.compile(r"[+-]?\d+")
Identity = Union[int, str]


@dataclass
class ImageEntry:
    """One image of the CSV: its id, split and captions, and the line that introduced it."""

    line: int
    pid: Identity
    split: Optional[str]
    captions: List[str] = field(default_factory=list)


def parse_id(text: str) -> Identity:
    """An integer id, or a name; ValueError for an empty id or a non-integer number."""
    text = text.strip()
    if not text:
        raise ValueError("id is empty; expected an integer or a name")
    if _INTEGER.fullmatch(text):
        return int(text)
    try:
        float(text)
    except ValueError:
        return text
    raise ValueError(
        f"id {text!r} is a number but not an integer; expected an integer or a name "
        "(a spreadsheet may have written 3 as 3.0)"
    )


def identity_order(pid: Identity) -> tuple:
    """Sort key: integers first, numerically; then names in natural order (person_2 < person_10)."""
    if isinstance(pid, int):
        return (0, pid)
    return (1, tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", pid)))


def _delimiter(path: Path, header_line: str) -> str:
    if path.suffix.lower() in (".tsv", ".tab") or ("\t" in header_line and "," not in header_line):
        return "\t"
    return ","


def read_rows(path: Path) -> Tuple[Dict[str, int], int, List[Tuple[int, List[str]]]]:
    """(column name -> position, number of columns, [(line number, fields)]) of the CSV at ``path``."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found; expected a CSV with the header image,caption,id[,split]") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text at byte {error.start}: {error.reason}") from None
    lines = text.splitlines()
    if not lines:
        raise DataError(f"{path}: empty file; expected a header naming the columns image, caption, id[, split]")
    reader = csv.reader(text.splitlines(keepends=True), delimiter=_delimiter(path, lines[0]))
    try:
        header = [name.strip().lower() for name in next(reader)]
        rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except csv.Error as error:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV: {error}") from None
    missing = [name for name in REQUIRED if name not in header]
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if missing or repeated:
        what = f"lacks the column(s) {', '.join(missing)}" if missing else f"names {', '.join(repeated)} twice"
        raise DataError(
            f"{path}: line 1: the header {','.join(header)!r} {what}; expected a header naming the "
            "columns image, caption, id and optionally split (e.g. image,caption,id,split)"
        )
    ignored = [name for name in header if name not in REQUIRED + OPTIONAL]
    if ignored:
        logger.info("%s: ignoring the column(s) %s", path, ", ".join(ignored))
    return {name: header.index(name) for name in REQUIRED + OPTIONAL if name in header}, len(header), rows


def _image_problem(image: str) -> str:
    if not image:
        return "image path is empty"
    parts = PurePosixPath(image.replace("\\", "/")).parts
    if image.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", image) or ".." in parts:
        return f"image path {image!r} must be relative to the dataset's imgs/ folder, inside it"
    return ""


def collect_images(
    columns: Dict[str, int], width: int, rows: Sequence[Tuple[int, List[str]]]
) -> Tuple[Dict[str, ImageEntry], List[str]]:
    """The images of the rows in order of first appearance, and every problem (naming the line)."""
    images: Dict[str, ImageEntry] = {}
    problems: List[str] = []
    for line, row in rows:
        if len(row) != width:
            problems.append(
                f"line {line}: {len(row)} field(s); expected {width} as in the header "
                "(quote a caption that holds the delimiter)"
            )
            continue
        image, caption = row[columns["image"]].strip(), row[columns["caption"]].strip()
        split = None
        if "split" in columns:
            split = row[columns["split"]].strip().lower() or None
        found = [_image_problem(image)]
        found.append("" if caption else f"empty caption for image {image!r}")
        try:
            pid = parse_id(row[columns["id"]])
        except ValueError as error:
            found.append(str(error))
            pid = None
        if split is not None and split not in SPLITS:
            found.append(f"split {split!r}; expected one of {', '.join(SPLITS)} or empty (= test)")
        found = [problem for problem in found if problem]
        if found:
            problems += [f"line {line}: {problem}" for problem in found]
            continue
        entry = images.setdefault(image, ImageEntry(line, pid, split))
        for what, mine, theirs in (("id", pid, entry.pid), ("split", split, entry.split)):
            if mine != theirs:
                problems.append(
                    f"line {line}: image {image!r} has {what} {mine!r} here but {theirs!r} on line "
                    f"{entry.line}; expected one {what} per image"
                )
        entry.captions.append(caption)
    return images, problems


def split_identities(identities: Sequence[Identity], fractions: Sequence[float], seed: int) -> Dict[Identity, str]:
    """Each identity's split, drawn with ``seed``: about ``fractions`` (train, val, test) of the
    identities each, every split with a positive fraction non-empty; no identity in two splits."""
    wanted = [index for index, fraction in enumerate(fractions) if fraction > 0]
    if len(identities) < len(wanted):
        raise DataError(
            f"--split {' '.join(map(str, fractions))}: {len(identities)} identities cannot fill "
            f"{len(wanted)} non-empty splits"
        )
    exact = [fraction * len(identities) for fraction in fractions]
    counts = [int(value) for value in exact]
    by_remainder = sorted(range(len(fractions)), key=lambda i: (-(exact[i] - counts[i]), i))
    for index in by_remainder[: len(identities) - sum(counts)]:
        counts[index] += 1
    for index in wanted:  # a split asked for but rounded to nothing takes one from the largest
        if counts[index] == 0:
            counts[max(range(len(counts)), key=lambda i: counts[i])] -= 1
            counts[index] = 1
    order = sorted(identities, key=identity_order)
    random.Random(seed).shuffle(order)
    splits, start = {}, 0
    for split, count in zip(SPLITS, counts):
        splits.update({pid: split for pid in order[start : start + count]})
        start += count
    return splits


def build_records(images: Dict[str, ImageEntry], fractions: Optional[Sequence[float]], seed: int) -> List[dict]:
    """Records in the common format; names become integers, kept under ``"name"``."""
    pids = sorted({entry.pid for entry in images.values()}, key=identity_order)
    named = any(isinstance(pid, str) for pid in pids)
    number = {pid: index for index, pid in enumerate(pids)} if named else {pid: pid for pid in pids}
    drawn = split_identities(pids, fractions, seed) if fractions else {}
    records = []
    for image, entry in images.items():
        record = {"id": number[entry.pid], "file_path": image, "captions": entry.captions}
        split = drawn.get(entry.pid, entry.split)
        if split:
            record["split"] = split
        if named:
            record["name"] = str(entry.pid)
        records.append(record)
    return records


def make_annotations(
    table: Path,
    root: Path,
    name: str,
    fractions: Optional[Sequence[float]] = None,
    seed: int = 0,
    overwrite: bool = False,
    show_progress: bool = True,
) -> Path:
    """Write ``root/name/annotations.json`` from the CSV ``table``; returns its path.
    Raises :class:`DataError` listing every problem (nothing is written then)."""
    problem = dataset_name_problem(name) or ("a built-in dataset's name" if name in DATASETS else "")
    if problem:
        raise DataError(f"--name {name!r}: {problem}; expected the name of your own dataset's folder")
    folder = root / name
    target = folder / CUSTOM_ANNOTATION
    if not (folder / "imgs").is_dir():
        raise DataError(
            f"image folder {folder / 'imgs'} not found; expected the images there, the CSV's image paths relative to it"
        )
    if target.exists() and not overwrite:
        raise DataError(f"{target} already exists; --overwrite replaces it")
    columns, width, rows = read_rows(table)
    if fractions and "split" in columns:
        raise DataError(f"{table}: has a split column and --split was given; use one or the other")
    images, problems = collect_images(columns, width, rows)
    problems += image_problems(
        [(f"line {entry.line}", folder / "imgs" / image) for image, entry in images.items()], show_progress
    )
    if not images and not problems:
        problems.append("no data rows after the header")
    if problems:
        raise DataError(
            f"{table}: {len(problems)} problem(s), nothing written:\n  {listing(problems)}"
            if len(problems) > 1
            else f"{table}: {problems[0]}; nothing written"
        )
    records = build_records(images, fractions, seed)
    write_text_atomic(target, json.dumps(records, ensure_ascii=False, indent=1) + "\n")
    return target


def _fractions(values: Optional[List[float]], parser: argparse.ArgumentParser) -> Optional[List[float]]:
    if values is None:
        return None
    if any(value < 0 for value in values) or abs(sum(values) - 1) > 1e-6:
        parser.error(
            f"--split {' '.join(map(str, values))}: expected three fractions >= 0 (train, val, test) summing to 1"
        )
    return values


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("table", type=Path, metavar="CSV", help="CSV or TSV with the header image,caption,id[,split]")
    parser.add_argument("--root", type=Path, required=True, help="data root (data.root); images in ROOT/NAME/imgs/")
    parser.add_argument("--name", required=True, help="dataset name (data.dataset): the folder ROOT/NAME/")
    parser.add_argument(
        "--split",
        type=float,
        nargs=3,
        metavar=("TRAIN", "VAL", "TEST"),
        default=None,
        help="draw the splits by identity with these fractions (e.g. 0.8 0.1 0.1)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --split (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing annotations.json")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    fractions = _fractions(args.split, parser)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = make_annotations(
        args.table, args.root, args.name, fractions, args.seed, args.overwrite, show_progress=not args.quiet
    )
    dataset = RetrievalDataset(args.root, args.name)
    logger.info("wrote %s\n%s", target, dataset.statistics())
    if "train" not in dataset.splits:
        logger.info("no train split: %s is an evaluation-only set (--split TRAIN VAL TEST draws splits)", args.name)
    logger.info("next: python -m datasets.check %s %s", args.root, args.name)
    return 0
