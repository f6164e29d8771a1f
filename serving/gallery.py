"""An image folder (or chosen images under one folder, e.g. a dataset split) as a gallery:
its images' embeddings, cached in the folder and reused while the images and the weights are
unchanged; unreadable images are named and skipped; ranked for a description. The encoders
are a PyTorch model (serving.inference) or an ONNX export (serving.onnx_model)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import torch
from tqdm import tqdm

from datasets.bases import load_image
from datasets.readers import DataError
from datasets.tokenizer import tokenize
from datasets.transforms import build_transform
from serving.inference import Encoders
from utils.io import save_atomic

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
CACHE_FOLDER = ".fmfa_cache"
CACHE_VERSION = 1  # bump when the preprocessing changes


@dataclass
class Gallery:
    paths: List[Path]  # readable images, in sorted order
    features: torch.Tensor  # [N, D] L2-normalised, float32, CPU
    skipped: Dict[str, str] = field(default_factory=dict)  # unreadable image -> reason
    encoded: int = 0  # images encoded now (the rest came from the cache)


def list_images(folder: Path) -> List[Path]:
    """Image files under ``folder`` (recursively, sorted); a clear error when there are none."""
    if not folder.is_dir():
        raise DataError(f"image folder not found: {folder}")
    images = sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and CACHE_FOLDER not in p.parts
    )
    if not images:
        raise DataError(f"no images in {folder} (looked for {', '.join(IMAGE_SUFFIXES)}, in subfolders too)")
    return images


def _stamp(path: Path) -> Tuple[int, int]:
    stat = path.stat()
    return stat.st_size, stat.st_mtime_ns


def cache_file(folder: Path, loaded: Encoders) -> Path:
    """One cache per (weights file and its stamp, image size): other weights never mix in."""
    weights = loaded.weights.resolve()
    key = f"{CACHE_VERSION}|{weights}|{_stamp(weights)}|{list(loaded.image_size)}"
    return folder / CACHE_FOLDER / f"{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


def _read_cache(path: Path) -> Dict[str, Tuple[Tuple[int, int], torch.Tensor]]:
    if not path.is_file():
        return {}
    try:
        saved = torch.load(path, weights_only=True)
        return {
            name: (tuple(stamp), feature)
            for name, stamp, feature in zip(saved["names"], saved["stamps"], saved["features"])
        }
    except Exception as error:  # a damaged cache is rebuilt, never trusted
        logger.warning("ignoring unreadable embedding cache %s (%s)", path, error)
        return {}


@torch.no_grad()
def _encode(loaded: Encoders, paths: List[Path], batch_size: int) -> Tuple[Dict[Path, torch.Tensor], Dict]:
    """Embeddings of the readable ``paths``, decoded one batch at a time (bounded memory),
    and the unreadable ones with the reason."""
    transform = build_transform(loaded.image_size, train=False)
    features, skipped = {}, {}
    starts = range(0, len(paths), batch_size)
    for start in tqdm(starts, desc=f"encoding {len(paths)} images", unit="batch", disable=len(starts) < 2):
        chunk = []
        for path in paths[start : start + batch_size]:
            try:
                chunk.append((path, transform(load_image(path))))
            except DataError as error:
                skipped[str(path)] = str(error)
        if not chunk:
            continue
        out = loaded.embed_images(torch.stack([image for _, image in chunk]))
        for (path, _), feature in zip(chunk, out):
            features[path] = feature
    return features, skipped


def encode_folder(folder: Path, loaded: Encoders, batch_size: int = 64, use_cache: bool = True) -> Gallery:
    """Embeddings of every readable image of ``folder``; only new or changed files are encoded."""
    return encode_images(Path(folder), list_images(Path(folder)), loaded, batch_size, use_cache)


def encode_images(
    folder: Path, paths: Sequence[Path], loaded: Encoders, batch_size: int = 64, use_cache: bool = True
) -> Gallery:
    """Embeddings of the readable ``paths`` (files under ``folder``, whose cache they share with
    every other gallery of that folder); only images new to the cache or changed are encoded."""
    cache = cache_file(folder, loaded)
    cached = _read_cache(cache) if use_cache else {}
    stamps = {path: _stamp(path) for path in paths if path.is_file()}  # a missing one is skipped below
    names = {path: str(path.relative_to(folder)) for path in paths}
    known = {p: cached[names[p]][1] for p in stamps if names[p] in cached and cached[names[p]][0] == stamps[p]}
    fresh, skipped = _encode(loaded, [p for p in paths if p not in known], batch_size)
    known.update(fresh)
    for path, reason in skipped.items():
        logger.warning("skipped %s", reason)
    kept = [p for p in paths if p in known]
    if not kept:
        raise DataError(f"none of the {len(paths)} images in {folder} could be read")
    gallery = Gallery(kept, torch.stack([known[p] for p in kept]), skipped, len(fresh))
    if use_cache and fresh:
        entries = {name: entry for name, entry in cached.items() if (folder / name).is_file()}  # other galleries'
        entries.update({names[p]: (stamps[p], known[p]) for p in kept})
        _write_cache(cache, entries)
    return gallery


def rank_gallery(loaded: Encoders, gallery: Gallery, query: str, top_k: int) -> List[Tuple[Path, float]]:
    """The ``top_k`` images of ``gallery`` for ``query`` with their cosine similarity, best first."""
    text = loaded.embed_texts(tokenize(query, loaded.text_length).unsqueeze(0))
    scores = gallery.features @ text[0]
    best = scores.topk(min(top_k, len(gallery.paths)))
    return [(gallery.paths[i], float(s)) for s, i in zip(best.values, best.indices)]


def _write_cache(cache: Path, entries: Dict[str, Tuple[Tuple[int, int], torch.Tensor]]) -> None:
    try:
        cache.parent.mkdir(exist_ok=True)
        save_atomic(
            {
                "names": list(entries),
                "stamps": [list(stamp) for stamp, _ in entries.values()],
                "features": torch.stack([feature for _, feature in entries.values()]),
            },
            cache,
        )
    except OSError as error:  # a read-only folder still searches, just without a cache
        logger.warning("embedding cache not written (%s)", error)
