"""Import a public pretraining corpus as your own dataset:
``python -m datasets.corpora FORMAT SOURCE [SOURCE ...] --images DIR --root ROOT --name NAME``.

FORMAT is how the corpus' public code reads it:

- ``luperson-mllm`` (MLLM4Text-ReID): SOURCE are caption files, each a JSON object
  ``{image path: caption}``; an image's captions are those of every file under its base
  name, in the files' order, for every ``.jpg`` of ``--images`` (the images are the records;
  no identities). A caption holding template residue (``description]`` or ``<``) is left out
  (their loader swaps it for another).
- ``ham-pedes`` (HAM): SOURCE is a JSON object ``{image path: [caption, ...]}``, the paths
  relative to the SYNTH-PEDES image root (no identities).
- ``synth-pedes`` (PLIP): SOURCE is a JSON list of ``{"id", "file_path", "captions",
  "prompt_caption", "attributes"}`` (``--prompt-captions`` adds the prompt captions).
- ``mals`` (APTM): SOURCE are JSON lists of ``{"image", "caption", "image_id"[, "label"]}``,
  one per caption; the captions of one image are gathered, ``image_id`` is the identity.

It writes ``ROOT/NAME/annotations.json`` (the common record format, every record in the
train split, identities numbered 0..N-1; a corpus without identities gets one per image) and
links ``ROOT/NAME/imgs`` to ``--images``. Every malformed entry is named (file, key or index)
and nothing is written, unless ``--skip-bad`` (the others are written, the bad ones listed).
Then ``python -m datasets.check ROOT NAME`` and ``python -m datasets.write_shards``.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from configs.datasets import CUSTOM_ANNOTATION, DATASETS, dataset_name_problem
from datasets.readers import DataError, listing, load_json
from utils.cli import describe, report_user_errors
from utils.io import write_text_atomic

logger = logging.getLogger("datasets.corpora")  # the command's name, as users type it
TEMPLATE_RESIDUE = ("description]", "<")


@dataclass
class Corpus:
    """Images in order of first appearance, their captions and identities, and the problems."""

    captions: Dict[str, List[str]] = field(default_factory=dict)
    ids: Dict[str, object] = field(default_factory=dict)
    problems: List[str] = field(default_factory=list)
    dropped: int = 0

    def add(self, image: str, caption, pid=None) -> None:
        self.captions.setdefault(image, []).append(caption)
        if pid is not None:
            self.ids.setdefault(image, pid)


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _object(path: Path) -> dict:
    raw = load_json(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a JSON object {{image path: caption(s)}}, got {type(raw).__name__}")
    return raw


def _list(path: Path) -> list:
    raw = load_json(path)
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(raw).__name__}")
    return raw


def read_luperson_mllm(sources: Sequence[Path], images: Path, prompt_captions: bool) -> Corpus:
    corpus, by_name = Corpus(), {}
    for source in sources:
        for key, caption in _object(source).items():
            if not _text(caption):
                corpus.problems.append(f"{source}: key {key!r}: expected a caption (non-empty string)")
            elif any(residue in caption for residue in TEMPLATE_RESIDUE):
                corpus.dropped += 1
            else:
                by_name.setdefault(key.rsplit("/", 1)[-1], []).append(caption)
    for path in sorted(images.rglob("*.jpg")):
        image = path.relative_to(images).as_posix()
        if path.name not in by_name:
            corpus.problems.append(f"{path}: no caption in {', '.join(map(str, sources))}")
        for caption in by_name.get(path.name, []):
            corpus.add(image, caption)
    return corpus


def read_ham_pedes(sources: Sequence[Path], images: Path, prompt_captions: bool) -> Corpus:
    corpus = Corpus()
    for source in sources:
        for key, captions in _object(source).items():
            if not isinstance(captions, list) or not captions or not all(map(_text, captions)):
                corpus.problems.append(f"{source}: key {key!r}: expected a non-empty list of captions")
                continue
            for caption in captions:
                corpus.add(key, caption)
    return corpus


def read_synth_pedes(sources: Sequence[Path], images: Path, prompt_captions: bool) -> Corpus:
    corpus = Corpus()
    for source in sources:
        for index, record in enumerate(_list(source)):
            where = f"{source}: record {index}"
            if not isinstance(record, dict) or not _text(record.get("file_path")):
                corpus.problems.append(f"{where}: expected an object with 'file_path' (str)")
                continue
            captions = list(record.get("captions") or []) + list(
                record.get("prompt_caption") or [] if prompt_captions else []
            )
            pid = record.get("id")
            if not isinstance(pid, int) or isinstance(pid, bool) or not captions or not all(map(_text, captions)):
                corpus.problems.append(f"{where}: expected 'id' (int) and non-empty 'captions' (strings)")
                continue
            for caption in captions:
                corpus.add(record["file_path"], caption, pid)
    return corpus


def read_mals(sources: Sequence[Path], images: Path, prompt_captions: bool) -> Corpus:
    corpus = Corpus()
    for source in sources:
        for index, record in enumerate(_list(source)):
            fine = isinstance(record, dict) and _text(record.get("image")) and _text(record.get("caption"))
            if not fine or isinstance(record.get("image_id"), (dict, list, type(None))):
                corpus.problems.append(f"{source}: record {index}: expected 'image' and 'caption' (str), 'image_id'")
                continue
            corpus.add(record["image"], record["caption"], str(record["image_id"]))
    return corpus


READERS: Dict[str, Tuple[Callable[..., Corpus], bool]] = {  # format -> (reader, has identities)
    "luperson-mllm": (read_luperson_mllm, False),
    "ham-pedes": (read_ham_pedes, False),
    "synth-pedes": (read_synth_pedes, True),
    "mals": (read_mals, True),
}


def corpus_records(corpus: Corpus, identities: bool) -> List[dict]:
    """The common format's records; identities (or, without, images) numbered 0..N-1."""
    numbers: Dict[object, int] = {}
    records = []
    for index, (image, captions) in enumerate(corpus.captions.items()):
        pid = numbers.setdefault(corpus.ids[image], len(numbers)) if identities else index
        records.append({"id": pid, "file_path": image, "captions": captions, "split": "train"})
    return records


def import_corpus(
    kind: str,
    sources: Sequence[Path],
    images: Path,
    root: Path,
    name: str,
    prompt_captions: bool = False,
    skip_bad: bool = False,
) -> Path:
    """Write ``root/name/annotations.json`` from the corpus' files and link ``imgs`` to
    ``images``; returns the annotation's path. Raises DataError listing every problem."""
    problem = dataset_name_problem(name) or ("a built-in dataset's name" if name in DATASETS else "")
    if problem:
        raise DataError(f"--name {name!r}: {problem}; expected the name of your own dataset's folder")
    if not images.is_dir():
        raise DataError(f"--images {images}: not a folder; expected the corpus' image root")
    reader, identities = READERS[kind]
    corpus = reader(sources, images, prompt_captions)
    if corpus.problems and not skip_bad:
        raise DataError(
            f"{kind}: {len(corpus.problems)} problem(s), nothing written:\n  {listing(corpus.problems)}\n"
            "(--skip-bad writes the other entries)"
        )
    if not corpus.captions:
        raise DataError(f"{kind}: no image with a caption in {', '.join(map(str, sources))}; nothing written")
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "imgs"
    if not link.exists():
        link.symlink_to(images.resolve(), target_is_directory=True)
    elif link.resolve() != images.resolve():
        raise DataError(f"{link} exists and is not --images {images}; remove it or choose another --name")
    target = folder / CUSTOM_ANNOTATION
    write_text_atomic(target, json.dumps(corpus_records(corpus, identities), ensure_ascii=False) + "\n")
    for problem in corpus.problems[:10]:
        logger.warning("skipped %s", problem)
    if corpus.dropped:
        logger.info("%d caption(s) with template residue (%s) left out", corpus.dropped, " or ".join(TEMPLATE_RESIDUE))
    return target


@report_user_errors
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("format", choices=sorted(READERS), help="the corpus' format")
    parser.add_argument("sources", type=Path, nargs="+", help="the corpus' annotation or caption file(s)")
    parser.add_argument("--images", type=Path, required=True, help="the corpus' image root")
    parser.add_argument("--root", type=Path, required=True, help="data root (data.root)")
    parser.add_argument("--name", required=True, help="dataset name: the folder ROOT/NAME/ to write")
    parser.add_argument("--prompt-captions", action="store_true", help="synth-pedes: add its prompt captions")
    parser.add_argument("--skip-bad", action="store_true", help="write the good entries, list the bad ones")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = import_corpus(
        args.format, args.sources, args.images, args.root, args.name, args.prompt_captions, args.skip_bad
    )
    records = json.loads(target.read_text(encoding="utf-8"))
    logger.info(
        "wrote %s: %d images, %d captions", target, len(records), sum(len(record["captions"]) for record in records)
    )
    shards = f"python -m datasets.write_shards {args.root} {args.name} --out SHARDS"
    logger.info(
        "next: python -m datasets.check %s %s; %s%s",
        args.root,
        args.name,
        shards,
        "" if READERS[args.format][1] else " --no-identities",
    )
    return 0
