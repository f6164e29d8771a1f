"""Sharded corpora: the manifest and the shards' samples, as ``python -m datasets.write_shards``
writes them and the streaming training dataset (:mod:`datasets.streaming`) reads them.

A shard is a plain tar archive in WebDataset's convention (open_clip's): each sample is two
consecutive members sharing a key, ``KEY.json`` (``{"index", "image", "captions"[, "id"]}``:
the record's position in its annotation file, its image path, its captions, its identity)
then ``KEY.<ext>`` (the image file's bytes as they were, so pixels decode as from the
folder). ``OUT/manifest.json`` lists every shard in order with its size, SHA-256, number of
samples, captions per sample and sorted identities, so a reader knows where every
image-caption pair lies before opening a shard, and a truncated or replaced shard is found by
its size before training starts.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from datasets.readers import DataError, load_json

MANIFEST = "manifest.json"
FORMAT = "fmfa-webdataset-shards"
VERSION = 1
BLOCK = 512  # tar block size


def shard_name(number: int) -> str:
    return f"shard-{number:06d}.tar"


def sample_key(record_index: int) -> str:
    """The WebDataset key of a record: its index in the annotation file, zero-padded."""
    return f"{record_index:09d}"


@dataclass(frozen=True)
class ShardSample:
    """One image of a shard with its captions; ``pid`` is the file identity (None without)."""

    key: str
    record: int
    image_name: str
    image_bytes: bytes
    captions: List[str]
    pid: Optional[int]


@dataclass(frozen=True)
class ShardInfo:
    name: str
    bytes: int
    captions: List[int]  # captions of each sample, in order
    ids: Optional[List[int]]  # sorted distinct identities; None for a corpus without

    @property
    def pairs(self) -> int:
        return sum(self.captions)


@dataclass
class Manifest:
    """A shard folder's manifest: its shards in order and whether the corpus has identities."""

    folder: Path
    shards: List[ShardInfo]
    identities: bool
    source: Dict[str, str]

    @property
    def pairs(self) -> int:
        return sum(shard.pairs for shard in self.shards)

    def identity_labels(self) -> Dict[int, int]:
        """File identity -> label 0..C-1 in sorted order (as ``RetrievalDataset.train_pairs``)."""
        ids = sorted({pid for shard in self.shards for pid in shard.ids or ()})
        return {pid: label for label, pid in enumerate(ids)}

    def check_sizes(self) -> None:
        """Every shard exists with the size the manifest gives; else a DataError naming each."""
        problems = []
        for shard in self.shards:
            path = self.folder / shard.name
            size = path.stat().st_size if path.is_file() else None
            if size != shard.bytes:
                found = "missing" if size is None else f"{size} bytes"
                problems.append(f"{path}: {found}; the manifest says {shard.bytes} bytes")
        if problems:
            raise DataError(
                f"{self.folder / MANIFEST}: {len(problems)} shard(s) truncated, missing or replaced:\n  "
                + "\n  ".join(problems[:10])
                + "\n(rerun python -m datasets.write_shards with the same --out to rewrite them)"
            )


def _shard_entry(raw: dict, where: str) -> ShardInfo:
    try:
        ids = raw["ids"]
        return ShardInfo(str(raw["name"]), int(raw["bytes"]), [int(c) for c in raw["captions"]], ids)
    except (KeyError, TypeError, ValueError) as error:
        raise DataError(f"{where}: malformed shard entry ({error}); expected name, bytes, captions, ids") from None


def read_manifest(folder: str | Path) -> Manifest:
    """The manifest of the shard folder ``folder``; a DataError names what is missing or wrong."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(
            f"{path} not found; expected a folder written by `python -m datasets.write_shards ROOT NAME --out {folder}`"
        )
    raw = load_json(path)
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("version") != VERSION:
        raise DataError(f"{path}: not a shard manifest of format {FORMAT!r} version {VERSION}")
    shards = [_shard_entry(entry, f"{path}: shards[{n}]") for n, entry in enumerate(raw.get("shards", []))]
    if not shards or not sum(shard.pairs for shard in shards):
        raise DataError(f"{path}: no samples; expected at least one shard with captions")
    return Manifest(folder, shards, bool(raw["identities"]), dict(raw.get("source", {})))


def _member_key(name: str) -> tuple:
    """(key, extension) of a member: WebDataset splits the base name at its first dot."""
    directory, _, base = name.rpartition("/")
    stem, _, extension = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), extension


def _member(handle: BinaryIO, read: bool) -> Optional[Tuple[str, bytes]]:
    """The next member of a USTAR archive as (name, data; b"" when not ``read``, its bytes
    seeked over), or None at the end-of-archive block. Only regular files, as the writer
    writes them; a short read or a wrong header checksum raises EOFError/ValueError."""
    header = handle.read(BLOCK)
    if len(header) < BLOCK:
        raise EOFError("archive ends inside a header (no end-of-archive block)")
    if header == bytes(BLOCK):
        return None
    if int(header[148:156].split(b"\0")[0].strip() or b"0", 8) != sum(header) - sum(header[148:156]) + 256:
        raise ValueError("header checksum mismatch")
    if header[156:157] not in (b"0", b"\0"):
        raise ValueError(f"member type {header[156:157]!r}; expected regular files only")
    name = (header[345:500].split(b"\0")[0] + b"/" if header[345] else b"") + header[:100].split(b"\0")[0]
    size = int(header[124:136].split(b"\0")[0].strip() or b"0", 8)
    padded = -(-size // BLOCK) * BLOCK
    if not read:
        handle.seek(padded, 1)
        return name.decode("utf-8"), b""
    data = handle.read(padded)
    if len(data) < size:
        raise EOFError(f"member {name.decode('utf-8', 'replace')}: {len(data)} of {size} bytes")
    return name.decode("utf-8"), data[:size]


def read_samples(path: Path, skip: int = 0) -> Iterator[ShardSample]:
    """The samples of the shard at ``path`` from its ``skip``-th on (:func:`numbered_samples`)."""
    return (sample for _, sample in numbered_samples(path, skip))


def numbered_samples(
    path: Path, skip: int = 0, wanted: Optional[Callable[[int], bool]] = None
) -> Iterator[Tuple[int, ShardSample]]:
    """(number, sample) of the shard at ``path``'s samples from its ``skip``-th on that ``wanted``
    accepts (all by default), read sequentially: the members of the others are seeked over, not
    read. A truncated or malformed shard raises DataError naming it and the sample reached."""
    number = 0
    try:
        with open(path, "rb", buffering=BLOCK) as handle:  # no read-ahead past a member seeked over
            while True:
                read = number >= skip and (wanted is None or wanted(number))
                meta = _member(handle, read)
                if meta is None:
                    return
                image = _member(handle, read)
                key, extension = _member_key(meta[0])
                if image is None or extension != "json" or _member_key(image[0])[0] != key:
                    raise ValueError("expected KEY.json then KEY.<image> members")
                if read:
                    record = json.loads(meta[1])
                    captions, pid = list(record["captions"]), record.get("id")
                    yield number, ShardSample(key, int(record["index"]), str(record["image"]), image[1], captions, pid)
                number += 1
    except (OSError, EOFError, ValueError, KeyError, TypeError) as error:
        raise DataError(
            f"shard {path}: unreadable at sample {number} ({type(error).__name__}: {error}); truncated or "
            "damaged: rerun python -m datasets.write_shards with the same --out to rewrite it"
        ) from None


def image_file(sample: ShardSample) -> io.BytesIO:
    return io.BytesIO(sample.image_bytes)


def pair_offsets(captions: Sequence[int]) -> List[int]:
    """The first pair index of each sample, and the total at the end (cumulative captions)."""
    offsets = [0]
    for count in captions:
        offsets.append(offsets[-1] + count)
    return offsets
