"""What the search page shows, without the page: a gallery (an image folder or a dataset
split) with its cached embeddings, the ranked results of a query as framed thumbnails with
captions, and a result's EFA word-to-patch map. Every user mistake is a :class:`PageMessage`
(a sentence for the page), never a traceback."""

from __future__ import annotations

import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from PIL import Image, ImageOps

from configs.errors import UserError
from datasets.bases import load_image
from datasets.build import read_dataset
from serving.efa_maps import default_words, word_maps
from serving.figures import CORRECT, WRONG, similarity_maps
from serving.gallery import Gallery, encode_folder, encode_images, rank_gallery
from serving.inference import Encoders, LoadedModel

THUMBNAIL_HEIGHT = 192
FRAME = 6  # pixels of green / red around a result of a split
MAX_TOP_K = 50


class PageMessage(UserError):
    """A sentence the page shows instead of a result (an empty query, a word not in it...)."""


@dataclass
class PageGallery:
    """The searched images: their embeddings, where they come from, and for a dataset split the
    identity of each image and each caption (which frame results right or wrong)."""

    gallery: Gallery
    folder: Path  # the images are shown relative to it; its .fmfa_cache holds the embeddings
    title: str
    image_pids: Dict[Path, int] = field(default_factory=dict)
    caption_pids: Dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        """One line: what is searched and what was skipped (every unreadable image named)."""
        line = (
            f"{self.title}: {len(self.gallery.paths):,} images ({self.gallery.encoded:,} encoded at start, "
            f"{len(self.gallery.paths) - self.gallery.encoded:,} from the cache)"
        )
        skipped = self.gallery.skipped
        if skipped:
            names = ", ".join(sorted(Path(path).name for path in skipped))
            line += f"; {len(skipped)} unreadable image{'s' * (len(skipped) > 1)} skipped: {names}"
        return line


def folder_gallery(folder: Path, loaded: Encoders, batch_size: int = 64, use_cache: bool = True) -> PageGallery:
    """Every image under ``folder`` (search.py's gallery and cache)."""
    gallery = encode_folder(folder, loaded, batch_size, use_cache)
    return PageGallery(gallery, Path(folder), f"folder {folder}")


def split_gallery(
    root: Path, dataset: str, split: str, loaded: Encoders, batch_size: int = 64, use_cache: bool = True
) -> PageGallery:
    """The images of a dataset split, cached in their common folder (shared with search.py
    --images on that folder), with the identities of its images and captions."""
    eval_set = read_dataset(str(root), dataset).eval_set(split)
    folder = Path(os.path.commonpath([path.parent for path in eval_set.image_paths]))
    gallery = encode_images(folder, eval_set.image_paths, loaded, batch_size, use_cache)
    return PageGallery(
        gallery,
        folder,
        f"{dataset} {split} split",
        dict(zip(eval_set.image_paths, eval_set.image_pids)),
        {caption.strip(): pid for caption, pid in zip(eval_set.captions, eval_set.caption_pids)},
    )


def thumbnail(path: Path, correct: Optional[bool]) -> Image.Image:
    """The image at the page's height, framed green (right person) or red (wrong) when known."""
    image = load_image(path)
    width = max(1, round(image.width * THUMBNAIL_HEIGHT / image.height))
    image = image.resize((width, THUMBNAIL_HEIGHT), Image.BILINEAR)
    if correct is None:
        return image
    return ImageOps.expand(image, border=FRAME, fill=CORRECT if correct else WRONG)


@dataclass
class Results:
    query: str
    hits: List[Tuple[Path, float]]
    items: List[Tuple[Image.Image, str]]  # (thumbnail, caption) per result, best first
    summary: str


def search(loaded: Encoders, page: PageGallery, query: str, top_k: float) -> Results:
    """The ``top_k`` results of ``query`` (search.py's ranking), framed when the query is one of
    the split's captions, each captioned with rank, score and file."""
    query = (query or "").strip()
    if not query:
        raise PageMessage("Type a description of a person first, e.g. “a woman in a red coat with a black backpack”.")
    k = int(top_k or 0)
    if not 1 <= k <= MAX_TOP_K:
        raise PageMessage(f"The number of results must be between 1 and {MAX_TOP_K}, not {top_k}.")
    start = time.perf_counter()
    hits = rank_gallery(loaded, page.gallery, query, k)
    took = time.perf_counter() - start
    pid = page.caption_pids.get(query)
    items = []
    for rank, (path, score) in enumerate(hits, 1):
        correct = None if pid is None else page.image_pids.get(path) == pid
        mark = "" if correct is None else (" ✓" if correct else " ✗")
        items.append((thumbnail(path, correct), f"#{rank} {score:.3f}{mark} · {path.relative_to(page.folder)}"))
    if pid is not None:
        frames = f"the query is a caption of person {pid}: green frames are that person, red frames others"
    elif page.caption_pids:
        frames = "frames appear when the query is one of the split's captions"
    else:
        frames = "an image folder has no identities, so no frames"
    summary = f"Top {len(hits)} of {len(page.gallery.paths):,} images in {took * 1000:.0f} ms ({frames})."
    return Results(query, hits, items, summary)


def split_caption(page: PageGallery, seed: int) -> str:
    """One of the split's captions (chosen by ``seed``), to search with right/wrong frames."""
    if not page.caption_pids:
        raise PageMessage("This gallery is an image folder: it has no captions to pick from.")
    return random.Random(seed).choice(sorted(page.caption_pids))


def parse_words(words: str, query: str) -> List[str]:
    """The words to map: those typed (spaces or commas between), else the query's content words."""
    chosen = [w for w in (words or "").replace(",", " ").split() if w]
    chosen = chosen or default_words(query)
    if not chosen:
        raise PageMessage("The query has no word of more than three letters to map: type the words to map.")
    return chosen


def efa_map(loaded: Encoders, results: Optional[Results], index: Optional[int], words: str) -> Tuple[Image.Image, str]:
    """The EFA map of the query's words on result ``index`` (PyTorch weights only), and a line
    saying what it shows."""
    if results is None or index is None or not 0 <= index < len(results.hits):
        raise PageMessage("Search first, then choose a result to see where its words look.")
    if not isinstance(loaded, LoadedModel):
        raise PageMessage(
            "EFA word-to-patch maps need the PyTorch weights (a run folder or a .pth file): this page "
            "runs an ONNX export, which holds only the two global encoders. Start it with --checkpoint to see them."
        )
    chosen = parse_words(words, results.query)
    path, score = results.hits[index]
    shown, before, after = word_maps(loaded, load_image(path), results.query, chosen)
    with tempfile.TemporaryDirectory() as folder:
        title = f"#{index + 1} {path.name}: {results.query}"
        with Image.open(similarity_maps(shown, chosen, before, after, title, Path(folder) / "map.png")) as picture:
            shown_map = picture.convert("RGB")
    note = (
        f"Result #{index + 1} ({path.name}, score {score:.3f}): where the words {', '.join(chosen)} look, "
        "before and after EFA's sparsification (red = most similar; pruned patches uncoloured)."
    )
    return shown_map, note
