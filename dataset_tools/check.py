"""Validate a dataset folder: ``python -m datasets.check ROOT NAME [--text-length N] [--strict]``.

NAME is a built-in dataset (CUHK-PEDES, ICFG-PEDES, RSTPReid, Synthetic-PEDES) or your own,
``ROOT/NAME/annotations.json`` (README, "Your own data"). Checks every record's keys and
types, that every image exists and decodes, and prints the split counts. Every problem is
reported with its record or file; the exit status is 1 if there was any, 0 otherwise.
Then the caption checks (:mod:`dataset_tools.caption_checks`): captions shared by different
identities, repeated on one image, of one word or none, or cut at ``--text-length`` tokens;
warnings with counts and examples, which set the exit status to 1 only with ``--strict``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from tqdm import tqdm

from configs.datasets import DATASETS
from configs.defaults import DataConfig
from dataset_tools.caption_checks import CaptionedImage, caption_warnings
from datasets.bases import load_image
from datasets.readers import (
    DataError,
    RetrievalDataset,
    find_annotation_file,
    get_layout,
    image_key_of,
    load_json,
    record_problems,
)
from utils.cli import USER_ERROR_STATUS, describe, report_user_errors

logger = logging.getLogger("datasets.check")  # the command's name, as users type it


def annotation_problems(root: Path, name: str) -> Tuple[List[str], List[Tuple[str, Path]], List[CaptionedImage]]:
    """(every problem of every record, the image paths and the captions of the well-formed ones)."""
    layout = get_layout(name)
    path = find_annotation_file(root, layout)
    raw = load_json(path)
    if not isinstance(raw, list):
        return [f"{path}: expected a JSON list of records, got {type(raw).__name__}"], [], []
    problems, images, captioned = [], [], []
    for index, record in enumerate(raw):
        found = record_problems(index, record, layout)
        problems += [f"{path}: {problem}" for problem in found]
        if not found:
            image = record[image_key_of(record, layout)]
            images.append((f"record {index}", path.parent / "imgs" / image))
            captioned.append(CaptionedImage(index, record["id"], image, tuple(record["captions"])))
    return problems, images, captioned


def image_problems(images: Sequence[Tuple[str, Path]], show_progress: bool = True) -> List[str]:
    """Every missing or undecodable image of (where it was named, path), as "where: why"."""
    problems = []
    for where, image in tqdm(images, desc="images", disable=None if show_progress else True):
        try:
            load_image(image)
        except DataError as error:
            problems.append(f"{where}: {error}")
    return problems


def check_dataset(root: str | Path, name: str, show_progress: bool = True) -> List[str]:
    """All problems found in ``root/name`` in one pass (an empty list when the dataset is
    valid): every malformed record, and every missing or unreadable image of the others."""
    return check_dataset_and_captions(root, name, None, show_progress)[0]


def check_dataset_and_captions(
    root: str | Path, name: str, text_length: Optional[int] = DataConfig.text_length, show_progress: bool = True
) -> Tuple[List[str], List[str]]:
    """(problems as :func:`check_dataset` finds them, caption warnings of the well-formed
    records: :func:`dataset_tools.caption_checks.caption_warnings` at ``text_length`` tokens;
    none when ``text_length`` is None)."""
    root = Path(root)
    try:
        problems, images, captioned = annotation_problems(root, name)
    except DataError as error:
        return [str(error)], []
    warnings = caption_warnings(captioned, text_length) if text_length is not None else []
    problems += image_problems(images, show_progress)
    if problems:
        return problems, warnings
    try:
        dataset = RetrievalDataset(root, name)
    except DataError as error:
        return [str(error)], warnings
    logger.info("\n%s", dataset.statistics())
    if dataset.layout.custom:  # your own data has the splits its records name (no split: test)
        logger.info(
            "%s: splits %s%s",
            dataset.name,
            ", ".join(dataset.splits),
            "" if "train" in dataset.splits else " (no train split: evaluation only)",
        )
    for split in dataset.layout.splits:
        if not any(record.split == split for record in dataset.records):
            problems.append(f"{dataset.annotation_file}: split {split!r} has no records")
    return problems, warnings


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("root", help="dataset root holding the dataset folders")
    parser.add_argument(
        "name", help=f"dataset: {', '.join(DATASETS)}, or your own folder ROOT/NAME/ holding annotations.json and imgs/"
    )
    parser.add_argument(
        "--text-length",
        type=int,
        default=DataConfig.text_length,
        metavar="N",
        help="data.text_length: longer captions are reported as truncated (default: %(default)s)",
    )
    parser.add_argument(
        "--strict", action="store_true", help=f"caption warnings also make the exit status {USER_ERROR_STATUS}"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.text_length < 1:
        parser.error(f"--text-length {args.text_length}: expected a positive number of tokens")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problems, warnings = check_dataset_and_captions(
        args.root, args.name, args.text_length, show_progress=not args.quiet
    )
    for problem in problems:
        logger.error(problem)
    for warning in warnings:
        logger.warning("warning: %s", warning)
    logger.info(
        "%s: %d problem(s), %d caption warning(s)%s",
        args.name,
        len(problems),
        len(warnings),
        " (--strict: warnings fail the check)" if args.strict and warnings else "",
    )
    return USER_ERROR_STATUS if problems or (args.strict and warnings) else 0
