"""Synthetic-PEDES: a seeded, procedurally drawn pedestrian dataset in the CUHK-PEDES format.

The project's default data where the real datasets are absent (CPU quick start). An
identity is one combination of attributes (gender, hair style and colour, upper garment
type and colour, lower garment type and colour, shoe colour, bag type and colour); every
combination is unique while each single value is shared by many identities, so only the
combination tells people apart. Each identity gets a few images (pose, background and
camera differ, see :mod:`dataset_tools.synthetic_draw`) and each image two captions written
from the attributes with varied templates and synonyms.

Layout (as CUHK-PEDES): ``ROOT/Synthetic-PEDES/imgs/<split>/<id>_<n>.jpg`` and
``ROOT/Synthetic-PEDES/reid_raw.json``, a list of ``{"id", "file_path", "captions",
"split", "processed_tokens"}``; ids are 1-based and contiguous (train, then val, then
test). The annotation is written last and atomically; ``synthetic.json`` beside it holds
the parameters, so a complete dataset made with the same ones is not generated again.
Every random draw comes from a generator seeded by (seed, stream, id, image), so the
output does not depend on the number of worker processes.

    python -m datasets.synthetic --root data --train-ids 500 --val-ids 100 --test-ids 100 --seed 0
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple, Union

import numpy as np

from dataset_tools.synthetic_draw import PALETTE, SKIN_RGB, Identity, render
from datasets.readers import DataError
from utils.cli import describe, report_user_errors
from utils.io import write_text_atomic

logger = logging.getLogger("datasets.synthetic")  # the command's name, as users type it

DATASET_NAME = "Synthetic-PEDES"
ANNOTATION = "reid_raw.json"
META = "synthetic.json"
GENERATOR_VERSION = 1
SPLITS = ("train", "val", "test")
COLOURS = tuple(PALETTE)
HAIR_COLOURS = {"black": 0.45, "brown": 0.3, "blond": 0.15, "grey": 0.1}
HAIR_STYLES = {
    "man": {"short": 0.68, "long": 0.08, "ponytail": 0.06, "bald": 0.18},
    "woman": {"short": 0.16, "long": 0.46, "ponytail": 0.24, "bun": 0.14},
}
UPPER_TYPES = {
    "man": {"t-shirt": 0.35, "shirt": 0.25, "jacket": 0.25, "coat": 0.15},
    "woman": {"t-shirt": 0.25, "shirt": 0.2, "jacket": 0.2, "coat": 0.12, "dress": 0.23},
}
LOWER_TYPES = {"man": {"trousers": 0.72, "shorts": 0.28}, "woman": {"trousers": 0.5, "shorts": 0.2, "skirt": 0.3}}
BAG_TYPES = {
    "man": {"none": 0.38, "backpack": 0.3, "handbag": 0.07, "shoulder bag": 0.25},
    "woman": {"none": 0.3, "backpack": 0.22, "handbag": 0.26, "shoulder bag": 0.22},
}
STREAM_IDENTITIES, STREAM_COUNTS, STREAM_CAPTIONS, STREAM_IMAGE = 0, 1, 2, 3
PathLike = Union[str, Path]


ATTRIBUTES: Tuple[str, ...] = tuple(f.name for f in fields(Identity))[:-1]


def _pick(rng: np.random.Generator, options: Union[Dict[str, float], Sequence[str]]) -> str:
    names = list(options)
    if isinstance(options, dict):
        weights = np.array(list(options.values()))
        return names[int(rng.choice(len(names), p=weights / weights.sum()))]
    return names[int(rng.integers(len(names)))]


def sample_identity(rng: np.random.Generator) -> Identity:
    """One random identity (the garment types depend on the gender)."""
    gender = _pick(rng, ("man", "woman"))
    hair = _pick(rng, HAIR_STYLES[gender])
    upper = _pick(rng, UPPER_TYPES[gender])
    upper_colour = _pick(rng, COLOURS)
    inner = _pick(rng, [c for c in COLOURS if c != upper_colour]) if upper == "jacket" else None
    lower_types = {"trousers": 0.6, "skirt": 0.4} if upper == "coat" and gender == "woman" else LOWER_TYPES[gender]
    lower = (
        None if upper == "dress" else ("trousers" if upper == "coat" and gender == "man" else _pick(rng, lower_types))
    )
    bag = _pick(rng, BAG_TYPES[gender])
    return Identity(
        gender,
        hair,
        None if hair == "bald" else _pick(rng, HAIR_COLOURS),
        upper,
        upper_colour,
        inner,
        lower,
        None if lower is None else _pick(rng, COLOURS),
        _pick(rng, COLOURS),
        bag,
        None if bag == "none" else _pick(rng, COLOURS),
        int(rng.integers(len(SKIN_RGB))),
    )


def _singletons(people: Sequence[Identity]) -> Set[int]:
    """Indices of people holding an attribute value that nobody else in ``people`` has."""
    columns = list(zip(*(p.key() for p in people)))
    counts = [Counter(column) for column in columns]
    return {i for c, column in zip(counts, columns) for i, v in enumerate(column) if c[v] == 1}


def sample_identities(num: int, rng: np.random.Generator, exclude: Optional[Set[tuple]] = None) -> List[Identity]:
    """``num`` identities with pairwise different attribute combinations (none in
    ``exclude``, which is updated). Identities that alone hold some value are drawn again
    (a bounded number of times), so that for a few dozen identities or more no single value
    identifies anyone."""
    taken = exclude if exclude is not None else set()

    def draw_new() -> Identity:
        while True:
            person = sample_identity(rng)
            if person.key() not in taken:
                taken.add(person.key())
                return person

    people = [draw_new() for _ in range(num)]
    for _ in range(20 * num if num >= 20 else 0):
        rare = sorted(_singletons(people))
        if not rare:
            break
        taken.discard(people[rare[0]].key())
        people[rare[0]] = draw_new()
    return people


def _colour_word(name: Optional[str], rng: np.random.Generator) -> str:
    return "gray" if name == "grey" and rng.random() < 0.3 else str(name)


def _garments(p: Identity, rng: np.random.Generator, his: str) -> Dict[str, str]:
    up, inner = _colour_word(p.upper_colour, rng), _colour_word(p.inner_colour, rng)
    low, shoes = _colour_word(p.lower_colour, rng), _colour_word(p.shoes_colour, rng)
    bag = _colour_word(p.bag_colour, rng)
    upper = {
        "t-shirt": [f"a {up} t-shirt", f"a {up} short-sleeved shirt", f"a {up} short sleeve top", f"a {up} tee"],
        "shirt": [f"a {up} long-sleeved shirt", f"a {up} long sleeve top", f"a {up} shirt with long sleeves"],
        "jacket": [
            f"a {up} jacket",
            f"an open {up} jacket",
            f"a {up} jacket over a {inner} shirt",
            f"a {up} jacket with a {inner} top underneath",
        ],
        "coat": [f"a long {up} coat", f"a {up} coat", f"a {up} overcoat", f"a long {up} jacket"],
        "dress": [f"a {up} dress", f"a {up} short-sleeved dress", f"a knee-length {up} dress"],
    }[p.upper_type]
    lower = {
        "trousers": [f"{low} trousers", f"{low} pants", f"a pair of {low} trousers"]
        + ([f"{low} jeans"] if low in ("blue", "black") else []),
        "shorts": [f"{low} shorts", f"a pair of {low} shorts", f"{low} short pants"],
        "skirt": [f"a {low} skirt", f"a knee-length {low} skirt"],
        None: [""],
    }[p.lower_type]
    bags = {
        "backpack": [f"a {bag} backpack", f"a {bag} rucksack", f"a {bag} bag on {his} back"],
        "handbag": [f"a {bag} handbag", f"a {bag} purse", f"a small {bag} bag in {his} hand"],
        "shoulder bag": [f"a {bag} shoulder bag", f"a {bag} bag over {his} shoulder", f"a {bag} crossbody bag"],
        "none": [""],
    }[p.bag_type]
    return {
        "upper": _pick(rng, upper),
        "lower": _pick(rng, lower),
        "bag": _pick(rng, bags),
        "shoes": _pick(rng, [f"{shoes} shoes", f"{shoes} sneakers", f"a pair of {shoes} shoes"]),
    }


def _phrases(p: Identity, rng: np.random.Generator, drop_shoes: bool) -> Dict[str, str]:
    man = p.gender == "man"
    he, his = ("he", "his") if man else ("she", "her")
    hc = _colour_word(p.hair_colour, rng)
    hair = _pick(
        rng,
        {
            "short": [f"short {hc} hair", f"{hc} short hair", f"a short {hc} haircut"],
            "long": [f"long {hc} hair", f"{hc} long hair", f"long {hc} hair down to {his} shoulders"],
            "ponytail": [f"{hc} hair in a ponytail", f"a {hc} ponytail", f"{hc} hair tied in a ponytail"],
            "bun": [f"{hc} hair in a bun", f"{hc} hair tied up in a bun"],
            "bald": ["a bald head", "a shaved head"],
        }[p.hair_style],
    )
    g = _garments(p, rng, his)
    items = [g["upper"], g["lower"]] + ([] if drop_shoes else [g["shoes"]])
    if rng.random() < 0.4:
        items = [items[int(i)] for i in rng.permutation(len(items))]
    carry = _pick(
        rng,
        {"backpack": ["carries", "is carrying", "has", "wears"], "handbag": ["carries", "is holding", "has"]}.get(
            p.bag_type, ["carries", "is carrying", "has"]
        ),
    )
    no_bag = _pick(rng, ["", "", f"{he} is not carrying a bag.", f"{he} has no bag."])
    return {
        "subject": _pick(
            rng,
            ["a man", "a young man", "a male pedestrian", "a guy"]
            if man
            else ["a woman", "a young woman", "a lady", "a female pedestrian", "a girl"],
        ),
        "noun": _pick(rng, ["man", "guy", "young man"] if man else ["woman", "lady", "girl"]),
        "he": he,
        "hair": hair,
        "has_hair": "is bald" if p.hair_style == "bald" and rng.random() < 0.5 else f"has {hair}",
        "upper": g["upper"],
        "outfit": _join([i for i in items if i]),
        "rest": _join([i for i in items if i and i != g["upper"]]),
        "bag_sentence": f"{he} {carry} {g['bag']}." if g["bag"] else no_bag,
        "bag_with": f", {_pick(rng, ['carrying', 'with'])} {g['bag']}" if g["bag"] else "",
        "bag_and": f" and {carry} {g['bag']}" if g["bag"] else "",
    }


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


TEMPLATES = (
    "{subject} with {hair} wearing {outfit}. {bag_sentence}",
    "{subject} is wearing {outfit}. {he} {has_hair}. {bag_sentence}",
    "the {noun} {has_hair} and is dressed in {upper}{bag_with}. {he} also wears {rest}.",
    "{subject} in {outfit}{bag_with}. {he} {has_hair}.",
    "this {noun} wears {outfit}. {he} {has_hair}{bag_and}.",
    "{subject} walking{bag_with}. {he} {has_hair} and wears {outfit}.",
)


def _tidy(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"\ba (?=[aeiou])", "an ", text)
    return re.sub(r"(^|\. )([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)


def make_captions(p: Identity, rng: np.random.Generator) -> List[str]:
    """Two captions from different templates; one of them may leave out the shoes."""
    first, second = (int(t) for t in rng.choice(len(TEMPLATES), 2, replace=False))
    omit = int(rng.integers(2)) if p.lower_type is not None and rng.random() < 0.35 else -1
    return [_tidy(TEMPLATES[t].format(**_phrases(p, rng, drop_shoes=k == omit))) for k, t in enumerate((first, second))]


def tokenize_words(caption: str) -> List[str]:
    """Lowercase word tokens without punctuation (CUHK-PEDES ``processed_tokens``)."""
    return re.findall(r"[a-z0-9]+(?:['-][a-z0-9]+)*", caption.lower())


def _render_job(job: Tuple[Identity, int, int, int, Tuple[int, int], str]) -> None:
    person, seed, pid, n, size, path = job
    render(person, np.random.default_rng([seed, STREAM_IMAGE, pid, n]), size).save(
        path, "JPEG", quality=90, subsampling=0
    )


def _plan(params: dict, imgs: Path) -> Tuple[List[dict], List[tuple]]:
    """The annotation records and the image jobs of a dataset."""
    seed, (low, high), size = params["seed"], params["images_per_id"], tuple(params["image_size"])
    rng, taken = np.random.default_rng([seed, STREAM_IDENTITIES]), set()
    records, jobs, pid = [], [], 0
    for split in SPLITS:
        for person in sample_identities(params[f"num_{split}_ids"], rng, taken):
            pid += 1
            count = int(np.random.default_rng([seed, STREAM_COUNTS, pid]).integers(low, high + 1))
            for n in range(1, count + 1):
                captions = make_captions(person, np.random.default_rng([seed, STREAM_CAPTIONS, pid, n]))
                file_path = f"{split}/{pid}_{n}.jpg"
                records.append(
                    {
                        "id": pid,
                        "file_path": file_path,
                        "captions": captions,
                        "split": split,
                        "processed_tokens": [tokenize_words(c) for c in captions],
                    }
                )
                jobs.append((person, seed, pid, n, size, str(imgs / file_path)))
    return records, jobs


def _is_complete(folder: Path, meta: dict) -> bool:
    try:
        if json.loads((folder / META).read_text(encoding="utf-8")) != meta:
            return False
        records = json.loads((folder / ANNOTATION).read_text(encoding="utf-8"))
        return all((folder / "imgs" / r["file_path"]).is_file() for r in records)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def generate(
    root: PathLike,
    num_train_ids: int = 500,
    num_val_ids: int = 100,
    num_test_ids: int = 100,
    images_per_id: Tuple[int, int] = (2, 4),
    image_size: Tuple[int, int] = (192, 64),
    seed: int = 0,
    workers: int = 1,
) -> Path:
    """Write Synthetic-PEDES under ``root`` (unless already there with these parameters) and
    return its folder ``root/Synthetic-PEDES``. ``image_size`` is (height, width), 3:1."""
    low, high = (int(v) for v in images_per_id)
    height, width = (int(v) for v in image_size)
    if min(num_train_ids, num_val_ids, num_test_ids) < 0 or num_train_ids < 1:
        raise DataError("identity counts must be >= 0, with at least one training identity")
    if not 1 <= low <= high:
        raise DataError(f"images_per_id must be (min, max) with 1 <= min <= max, got {images_per_id}")
    if width < 8 or height != 3 * width:
        raise DataError(f"image_size must be (height, width) with height = 3 x width >= 24, got {image_size}")
    params = {
        "num_train_ids": int(num_train_ids),
        "num_val_ids": int(num_val_ids),
        "num_test_ids": int(num_test_ids),
        "images_per_id": [low, high],
        "image_size": [height, width],
        "seed": int(seed),
    }
    meta = {"generator_version": GENERATOR_VERSION, "params": params}
    folder = Path(root) / DATASET_NAME
    if _is_complete(folder, meta):
        logger.info("%s is complete with these parameters; not generating it again", folder)
        return folder
    start = time.perf_counter()
    for name in (ANNOTATION, META):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / "imgs", ignore_errors=True)
    for split in SPLITS:
        (folder / "imgs" / split).mkdir(parents=True, exist_ok=True)
    records, jobs = _plan(params, folder / "imgs")
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            list(pool.map(_render_job, jobs, chunksize=32))
    else:
        for job in jobs:
            _render_job(job)
    write_text_atomic(folder / META, json.dumps(meta, indent=1) + "\n")
    write_text_atomic(folder / ANNOTATION, json.dumps(records))
    ids = params["num_train_ids"] + params["num_val_ids"] + params["num_test_ids"]
    logger.info(
        "%s: %d identities (%d/%d/%d), %d images, %d captions in %.1f s",
        folder,
        ids,
        num_train_ids,
        num_val_ids,
        num_test_ids,
        len(records),
        2 * len(records),
        time.perf_counter() - start,
    )
    return folder


def parse_and_generate(argv: Optional[Sequence[str]] = None) -> Path:
    """The command line's dataset: generated (or found complete) under --root."""
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--root", default="data", help="the dataset goes to ROOT/Synthetic-PEDES")
    parser.add_argument("--train-ids", type=int, default=500)
    parser.add_argument("--val-ids", type=int, default=100)
    parser.add_argument("--test-ids", type=int, default=100)
    parser.add_argument("--images-per-id", type=int, nargs=2, default=(2, 4), metavar=("MIN", "MAX"))
    parser.add_argument("--image-size", type=int, nargs=2, default=(192, 64), metavar=("HEIGHT", "WIDTH"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="processes drawing images")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return generate(
        args.root,
        args.train_ids,
        args.val_ids,
        args.test_ids,
        tuple(args.images_per_id),
        tuple(args.image_size),
        args.seed,
        args.workers,
    )


@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    parse_and_generate(argv)
    return 0
