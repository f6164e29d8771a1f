"""Write a dataset into tar shards for streaming:
``python -m datasets.write_shards ROOT NAME --out FOLDER [--split train] [--shard-size 1000] [--workers N]``.

NAME is any dataset this project reads (a built-in one, or your own ``ROOT/NAME/annotations.json``
as ``datasets.make_annotations`` and the corpus importers write it). The records of ``--split``
(``all``: every record) are cut, in file order, into shards of ``--shard-size`` images, which
a pool of ``--workers`` processes writes (format: :mod:`datasets.shards`); ``FOLDER/manifest.json``
is written last. A shard is written under a temporary name and renamed when whole, its
manifest entry beside it: a rerun keeps every finished shard whose size, SHA-256 and records
still match and writes only the others, so an interrupted run resumes.

Bad input is refused by record, as ``make_annotations`` does: every malformed record (keys,
types, an empty caption list) and every missing or undecodable image is named, and no
manifest is written. ``--skip-bad`` writes the good records instead and lists each refused
one, with its reason, under ``"skipped"`` in the manifest. ``--no-identities``: the corpus has
no person identities (its ``id`` fields are ignored; each image is its own identity for the
matching losses, and training refuses the ID loss).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from configs.datasets import SPLITS
from datasets.bases import decode_image
from datasets.readers import (
    DataError,
    find_annotation_file,
    get_layout,
    image_key_of,
    listing,
    load_json,
    record_problems,
    split_of,
)
from datasets.shards import FORMAT, MANIFEST, VERSION, sample_key, shard_name
from utils.cli import describe, report_user_errors
from utils.io import write_text_atomic

logger = logging.getLogger("datasets.write_shards")  # the command's name, as users type it


@dataclass(frozen=True)
class ShardJob:
    """What one shard holds: (record index, image path, captions, identity) of each record."""

    number: int
    out: str
    records: Tuple[Tuple[int, str, Tuple[str, ...], Optional[int]], ...]
    images: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(json.dumps([self.images, self.records]).encode()).hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _add(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)  # mtime 0, no owner: the same records give the same bytes
    member.size, member.mode = len(data), 0o644
    archive.addfile(member, fileobj=io.BytesIO(data))


def _image_bytes(path: Path, where: str) -> Tuple[Optional[bytes], str]:
    """(the file's bytes, "") when it decodes as an image; (None, "where: why") otherwise."""
    try:
        data = path.read_bytes()
    except OSError:
        return None, f"{where}: image file {path} not found or unreadable"
    try:
        decode_image(io.BytesIO(data), str(path))
    except DataError as error:
        return None, f"{where}: {error}"
    return data, ""


def kept_entry(job: ShardJob) -> Optional[dict]:
    """The finished shard's entry when its file still matches it (size, SHA-256, records)."""
    tar, entry_path = Path(job.out) / shard_name(job.number), Path(job.out) / (shard_name(job.number) + ".json")
    if not (tar.is_file() and entry_path.is_file()):
        return None
    try:
        entry = json.loads(entry_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    same = entry.get("plan") == job.digest and entry.get("bytes") == tar.stat().st_size
    return entry if same and entry.get("sha256") == sha256_of(tar) else None


def write_shard(job: ShardJob, skip_bad: bool) -> Tuple[Optional[dict], List[dict]]:
    """Write one shard; (its manifest entry, or None when a record was refused and not
    ``skip_bad``; the refused records as {"record", "problem"})."""
    kept = kept_entry(job)
    if kept is not None and (skip_bad or not kept.get("skipped")):  # a refused image may be back since
        return kept, kept.get("skipped", [])
    out = Path(job.out)
    target, partial = out / shard_name(job.number), out / (shard_name(job.number) + ".partial")
    refused, captions, ids = [], [], set()
    with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as archive:
        for index, image, texts, pid in job.records:
            data, problem = _image_bytes(Path(job.images) / image, f"record {index}")
            if data is None:
                refused.append({"record": index, "problem": problem})
                continue
            key, meta = sample_key(index), {"index": index, "image": image, "captions": list(texts)}
            if pid is not None:
                meta["id"] = pid
                ids.add(pid)
            extension = Path(image).suffix.lower().lstrip(".") or "jpg"
            _add(archive, f"{key}.json", json.dumps(meta, ensure_ascii=False).encode("utf-8"))
            _add(archive, f"{key}.{extension}", data)
            captions.append(len(texts))
    if refused and not skip_bad:
        partial.unlink()
        return None, refused
    os.replace(partial, target)
    entry = {
        "name": target.name,
        "bytes": target.stat().st_size,
        "sha256": sha256_of(target),
        "captions": captions,
        "ids": sorted(ids) if job.records and job.records[0][3] is not None else None,
        "skipped": refused,
        "plan": job.digest,
    }
    write_text_atomic(out / (target.name + ".json"), json.dumps(entry) + "\n")
    return entry, refused


def _write_one(arguments: Tuple[ShardJob, bool]) -> Tuple[Optional[dict], List[dict]]:
    return write_shard(*arguments)


def plan_shards(
    root: Path, name: str, split: str, out: Path, shard_size: int, identities: bool
) -> Tuple[List[ShardJob], List[dict], Dict[str, str]]:
    """(the shards' jobs, the malformed records as {"record", "problem"}, the source's description)."""
    layout = get_layout(name)
    annotation = find_annotation_file(root, layout)
    raw = load_json(annotation)
    if not isinstance(raw, list):
        raise DataError(f"{annotation}: expected a JSON list of records, got {type(raw).__name__}")
    chosen, refused = [], []
    for index, record in enumerate(raw):
        problems = record_problems(index, record, layout)
        if problems:
            refused += [{"record": index, "problem": problem} for problem in problems]
        elif split == "all" or split_of(record) == split:
            pid = record["id"] if identities else None
            chosen.append((index, record[image_key_of(record, layout)], tuple(record["captions"]), pid))
    images = str(annotation.parent / "imgs")
    jobs = [
        ShardJob(number, str(out), tuple(chosen[start : start + shard_size]), images)
        for number, start in enumerate(range(0, len(chosen), shard_size))
    ]
    return jobs, refused, {"root": str(root), "name": name, "annotation": str(annotation), "split": split}


def _refusal(where: str, refused: Sequence[dict], written: str) -> DataError:
    problems = [item["problem"] for item in refused]
    return DataError(
        f"{where}: {len(problems)} problem(s); {written}:\n  {listing(problems)}\n"
        "(fix them, or --skip-bad writes the other records and lists these in the manifest)"
    )


def write_shards(
    root: Path,
    name: str,
    out: Path,
    split: str = "train",
    shard_size: int = 1000,
    workers: int = 0,
    skip_bad: bool = False,
    identities: bool = True,
) -> Path:
    """Write ``out``'s shards and manifest; returns the manifest's path. ``workers`` = 0 writes
    in this process. Raises DataError listing every refused record (no manifest then)."""
    jobs, refused, source = plan_shards(root, name, split, out, shard_size, identities)
    if refused and not skip_bad:
        raise _refusal(source["annotation"], refused, "nothing written")
    if not jobs:
        raise DataError(f"{source['annotation']}: no valid record in split {split!r}; nothing written")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # a manifest always describes whole, current shards
    tasks = [(job, skip_bad) for job in jobs]
    if workers:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_write_one, tasks))
    else:
        results = [_write_one(task) for task in tasks]
    for _, skipped in results:
        refused += skipped
    if any(entry is None for entry, _ in results):
        whole = sum(entry is not None for entry, _ in results)
        raise _refusal(source["annotation"], refused, f"{whole} whole shard(s) kept for a rerun, no manifest")
    entries = [{key: value for key, value in entry.items() if key != "skipped"} for entry, _ in results]
    manifest = {"format": FORMAT, "version": VERSION, "source": source, "identities": identities}
    manifest.update(shards=entries, skipped=sorted(refused, key=lambda item: item["record"]))
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return out / MANIFEST


@report_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("root", type=Path, help="data root (data.root) holding the dataset folder NAME/")
    parser.add_argument("name", help="dataset: a built-in one or your own folder ROOT/NAME/ (annotations.json)")
    parser.add_argument("--out", type=Path, required=True, help="shard folder to write (data.shards)")
    parser.add_argument("--split", default="train", choices=(*SPLITS, "all"), help="records to write (%(default)s)")
    parser.add_argument("--shard-size", type=int, default=1000, help="images per shard (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="writing processes (0: this one)")
    parser.add_argument("--skip-bad", action="store_true", help="write the good records, list the refused ones")
    parser.add_argument("--no-identities", action="store_true", help="a corpus without person identities")
    args = parser.parse_args(argv)
    if args.shard_size < 1 or args.workers < 0:
        parser.error("--shard-size must be >= 1 and --workers >= 0")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    started = time.perf_counter()
    path = write_shards(
        args.root, args.name, args.out, args.split, args.shard_size, args.workers, args.skip_bad, not args.no_identities
    )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    shards = manifest["shards"]
    logger.info(
        "wrote %s: %d shard(s), %d images, %d captions, %.1f MB in %.1f s; %d record(s) skipped",
        path,
        len(shards),
        sum(len(shard["captions"]) for shard in shards),
        sum(sum(shard["captions"]) for shard in shards),
        sum(shard["bytes"] for shard in shards) / 1e6,
        time.perf_counter() - started,
        len(manifest["skipped"]),
    )
    for item in manifest["skipped"][:10]:
        logger.warning("skipped %s", item["problem"])
    return 0
