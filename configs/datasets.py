"""Where each dataset lives and how its annotation file reads: one table of the built-in
sets (docs/method.md, "Data") and the layout that every other name gets (your own data,
README "Your own data"). The readers (``datasets.readers``) and the config's checks both
go through :func:`layout_of`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

SPLITS = ("train", "val", "test")
CUSTOM_ANNOTATION = "annotations.json"  # ROOT/NAME/annotations.json: your own dataset NAME
DEFAULT_SPLIT = "test"  # the split of a record of your own data that names none


@dataclass(frozen=True)
class DatasetLayout:
    """ROOT/<name>/<annotation file> (a JSON list of records) and the images under ROOT/<name>/imgs/."""

    name: str
    annotation_files: Tuple[str, ...]  # accepted names, the first found wins
    image_keys: Tuple[str, ...]  # accepted keys of a record's image path; the first is the one written
    splits: Tuple[str, ...]
    source: str = ""  # where a built-in set comes from
    custom: bool = False  # your own data: "split" optional (absent = DEFAULT_SPLIT)

    @property
    def image_key(self) -> str:
        return self.image_keys[0]

    def describe(self, root: Path) -> str:
        folder = root / self.name
        split = "|".join(self.splits) + (f" (optional; absent = {DEFAULT_SPLIT})" if self.custom else "")
        keys = " | ".join(f'"{key}"' for key in self.image_keys)
        text = (
            f"{folder}/{self.annotation_files[0]} (a JSON list of records "
            f'{{"id": int, {keys}: str, "captions": [str, ...], "split": {split}}}) '
            f"and the images under {folder}/imgs/"
        )
        return text + (", the records' paths relative to it" if self.custom else "")


BUILT_IN: Dict[str, DatasetLayout] = {
    layout.name: layout
    for layout in (
        DatasetLayout(
            "CUHK-PEDES",
            ("reid_raw.json",),
            ("file_path",),
            SPLITS,
            "https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description (request from its authors)",
        ),
        DatasetLayout(
            "ICFG-PEDES",
            ("ICFG-PEDES.json", "ICFG_PEDES.json"),
            ("file_path",),
            ("train", "test"),
            "https://github.com/zifyloo/SSAN (request from its authors)",
        ),
        DatasetLayout(
            "RSTPReid",
            ("data_captions.json",),
            ("img_path",),
            SPLITS,
            "https://github.com/NjtechCVLab/RSTPReid-Dataset",
        ),
        # drawn by `python -m datasets.synthetic`, in the CUHK-PEDES format
        DatasetLayout(
            "Synthetic-PEDES",
            ("reid_raw.json",),
            ("file_path",),
            SPLITS,
            "`python -m datasets.synthetic --root DATA_ROOT` (drawn on this machine)",
        ),
    )
}
DATASETS = tuple(BUILT_IN)
NO_VAL = tuple(name for name, layout in BUILT_IN.items() if "val" not in layout.splits)


def dataset_name_problem(name: str) -> str:
    """Why ``name`` cannot name a dataset folder ("" when it can): one path component."""
    if not name or name != name.strip():
        return "empty or with surrounding spaces"
    if name in (".", "..") or any(char in name for char in "/\\\0"):
        return "a folder name, not a path (no '/', '\\', '.' or '..')"
    return ""


def dataset_problem(name: str) -> str:
    """Why ``name`` cannot be a dataset ("" when it can): a built-in name, or your own
    dataset's folder name under data.root. Whether that folder holds an annotation and
    images is checked when a run starts (processor.preflight) and when the data is read,
    not here: a saved config stays loadable where its data is not."""
    problem = "" if name in DATASETS else dataset_name_problem(name)
    if not problem:
        return ""
    return (
        f"one of {', '.join(DATASETS)}, or your own dataset: the name of a folder under data.root holding "
        f"{CUSTOM_ANNOTATION} and imgs/; {problem}"
    )


def layout_of(name: str) -> DatasetLayout:
    """A built-in set's layout, or your own dataset's (``name`` checked by the caller)."""
    return BUILT_IN.get(name) or DatasetLayout(
        name, (CUSTOM_ANNOTATION,), ("file_path", "img_path"), SPLITS, custom=True
    )
