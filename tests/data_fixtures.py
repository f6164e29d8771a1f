"""Small dataset folders in the real formats (docs/method.md, "Data"), written by the tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
from PIL import Image

# name -> (first train id, captions per image, split -> number of identities)
FIXTURES: Dict[str, Tuple[int, int, Dict[str, int]]] = {
    "CUHK-PEDES": (1, 2, {"train": 5, "val": 2, "test": 3}),  # CUHK ids are 1-based
    "ICFG-PEDES": (0, 1, {"train": 4, "test": 3}),
    "RSTPReid": (0, 2, {"train": 4, "val": 2, "test": 2}),
    "Synthetic-PEDES": (1, 2, {"train": 4, "val": 2, "test": 2}),
}
# Accepted annotation file names (the first is the one written) and the image key of each
# dataset, written out from docs/method.md ("Data") and never read from datasets.readers.LAYOUTS,
# so that a wrong file name or key in the code fails the tests instead of being copied into
# their fixtures. Synthetic-PEDES is written by dataset_tools/synthetic.py in the CUHK-PEDES format.
FILES: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "CUHK-PEDES": (("reid_raw.json",), "file_path"),
    "ICFG-PEDES": (("ICFG-PEDES.json", "ICFG_PEDES.json"), "file_path"),
    "RSTPReid": (("data_captions.json",), "img_path"),
    "Synthetic-PEDES": (("reid_raw.json",), "file_path"),
}
IMAGES_PER_ID = 2
COLOURS = ["red", "blue", "green", "black", "white", "grey", "yellow", "pink"]


def write_image(path: Path, seed: int, size=(24, 8)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)


def fixture_records(name: str) -> List[dict]:
    first_id, captions, splits = FIXTURES[name]
    key = FILES[name][1]
    records, pid = [], first_id
    for split, count in splits.items():
        for _ in range(count):
            for shot in range(IMAGES_PER_ID):
                texts = [
                    f"a person {pid} in a {COLOURS[(pid + c) % len(COLOURS)]} shirt, view {shot}"
                    for c in range(captions)
                ]
                records.append({"id": pid, key: f"{split}/{pid}_{shot}.jpg", "captions": texts, "split": split})
            pid += 1
    return records


def write_dataset(folder: Path, annotation_file: str, image_key: str, records: List[dict], image_size=(24, 8)) -> Path:
    """Write FOLDER/<annotation_file> holding ``records`` and, for every record whose
    ``image_key`` is a string, its image under FOLDER/imgs/; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for index, record in enumerate(records):
        if isinstance(record, dict) and isinstance(record.get(image_key), str):
            write_image(folder / "imgs" / record[image_key], index, image_size)
    (folder / annotation_file).write_text(json.dumps(records))
    return folder


def make_dataset(
    root: Path, name: str, records: List[dict] | None = None, annotation_file: str | None = None, image_size=(24, 8)
) -> Path:
    """Write ROOT/<name>/<annotation file> and its images; returns the dataset folder."""
    file_names, image_key = FILES[name]
    records = fixture_records(name) if records is None else records
    return write_dataset(root / name, annotation_file or file_names[0], image_key, records, image_size)
