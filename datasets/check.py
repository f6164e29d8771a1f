"""Validate a dataset folder: ``python -m datasets.check ROOT NAME``.

Checks every record's keys and types, that every image exists and decodes, and prints the
split counts. Every problem is reported with its record or file; the exit status is 1 if
there was any, 0 otherwise.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import List, Sequence, Tuple

from tqdm import tqdm

from datasets.bases import load_image
from datasets.readers import (LAYOUTS, DataError, RetrievalDataset, find_annotation_file, get_layout,
                              load_json, record_problems)
from utils.cli import report_user_errors

logger = logging.getLogger("datasets.check")


def annotation_problems(root: Path, name: str) -> Tuple[List[str], List[Tuple[int, Path]]]:
    """(every problem of every record, the image paths of the well-formed records)."""
    layout = get_layout(name)
    path = find_annotation_file(root, layout)
    raw = load_json(path)
    if not isinstance(raw, list):
        return [f"{path}: expected a JSON list of records, got {type(raw).__name__}"], []
    problems, images = [], []
    for index, record in enumerate(raw):
        found = record_problems(index, record, layout)
        problems += [f"{path}: {problem}" for problem in found]
        if not found:
            images.append((index, path.parent / "imgs" / record[layout.image_key]))
    return problems, images


def image_problems(images: List[Tuple[int, Path]], show_progress: bool = True) -> List[str]:
    problems = []
    for index, image in tqdm(images, desc="images", disable=not show_progress):
        try:
            load_image(image)
        except DataError as error:
            problems.append(f"record {index}: {error}")
    return problems


def check_dataset(root: str | Path, name: str, show_progress: bool = True) -> List[str]:
    """All problems found in ``root/name`` in one pass (an empty list when the dataset is
    valid): every malformed record, and every missing or unreadable image of the others."""
    root = Path(root)
    try:
        problems, images = annotation_problems(root, name)
    except DataError as error:
        return [str(error)]
    problems += image_problems(images, show_progress)
    if problems:
        return problems
    try:
        dataset = RetrievalDataset(root, name)
    except DataError as error:
        return [str(error)]
    logger.info("\n%s", dataset.statistics())
    for split in dataset.layout.splits:
        if not any(record.split == split for record in dataset.records):
            problems.append(f"{dataset.annotation_file}: split {split!r} has no records")
    return problems


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="dataset root holding the dataset folders")
    parser.add_argument("name", choices=sorted(LAYOUTS), help="dataset name")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    problems = check_dataset(args.root, args.name, show_progress=not args.quiet)
    for problem in problems:
        logger.error(problem)
    logger.info("%s: %d problem(s)", args.name, len(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
