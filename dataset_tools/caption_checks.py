"""Caption checks: the noise text-to-image person sets are known for, reported as warnings.

A caption shared by different identities cannot tell them apart (RSTPReid's repository,
issue 5: one description for five persons); the same caption twice on one image counts it
twice; a caption of one word (or none: punctuation only) says next to nothing; a caption
longer than ``data.text_length`` tokens (start and end tokens included) is cut. Captions
are compared after case folding, whitespace collapsing and dropping the final punctuation,
so "A man in red." and "a man in red" are the same caption.

``python -m datasets.check ROOT NAME`` prints these after the record and image checks; they
change its exit status only with ``--strict``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Sequence, Set, Tuple

from datasets.tokenizer import get_tokenizer

EXAMPLES = 3  # examples shown per warning
_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class CaptionedImage:
    """One well-formed record: its index in the annotation file, identity, image and captions."""

    index: int
    pid: int
    image: str
    captions: Tuple[str, ...]


def normalise(caption: str) -> str:
    """The form captions are compared in: case-folded, whitespace collapsed, final punctuation dropped."""
    return _SPACE.sub(" ", caption.casefold()).strip().rstrip(".,;:!? ").strip()


def _quote(caption: str, limit: int = 60) -> str:
    text = _SPACE.sub(" ", caption).strip()
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


def _ids(pids: Set[int], limit: int = 6) -> str:
    ordered = sorted(pids)
    return ", ".join(map(str, ordered[:limit])) + (f", ... ({len(ordered)} in all)" if len(ordered) > limit else "")


def shared_across_identities(images: Sequence[CaptionedImage]) -> str:
    """Captions written for more than one identity ("" when there is none)."""
    owners: Dict[str, Set[int]] = defaultdict(set)
    first: Dict[str, str] = {}
    for image in images:
        for caption in image.captions:
            key = normalise(caption)
            owners[key].add(image.pid)
            first.setdefault(key, caption)
    shared = [key for key, pids in owners.items() if len(pids) > 1]
    if not shared:
        return ""
    shared.sort(key=lambda key: (-len(owners[key]), key))
    involved = set().union(*(owners[key] for key in shared))
    examples = "; ".join(f"{_quote(first[key])} (ids {_ids(owners[key])})" for key in shared[:EXAMPLES])
    return (
        f"{len(shared)} distinct caption(s) are shared by different identities ({len(involved)} identities "
        f"involved; such captions cannot tell those identities apart), e.g. {examples}"
    )


def duplicated_on_one_image(images: Sequence[CaptionedImage]) -> str:
    """Images that carry the same caption more than once ("" when there is none)."""
    found: List[Tuple[CaptionedImage, str, int]] = []
    for image in images:
        counts: Dict[str, int] = defaultdict(int)
        first: Dict[str, str] = {}
        for caption in image.captions:
            counts[normalise(caption)] += 1
            first.setdefault(normalise(caption), caption)
        found += [(image, first[key], n) for key, n in counts.items() if n > 1]
    if not found:
        return ""
    extra = sum(n - 1 for _, _, n in found)
    examples = "; ".join(
        f"record {image.index} ({image.image}): {_quote(caption)} x{n}" for image, caption, n in found[:EXAMPLES]
    )
    return (
        f"{len({image.index for image, _, _ in found})} image(s) carry the same caption more than once "
        f"({extra} duplicate caption(s)), e.g. {examples}"
    )


def too_short(images: Sequence[CaptionedImage]) -> str:
    """Captions of at most one word ("" when there is none)."""
    found = [
        (image, position, caption)
        for image in images
        for position, caption in enumerate(image.captions)
        if len(_WORD.findall(caption)) <= 1
    ]
    if not found:
        return ""
    examples = "; ".join(
        f"record {image.index} captions[{position}] {_quote(caption)}" for image, position, caption in found[:EXAMPLES]
    )
    return f"{len(found)} caption(s) are empty or one word long, e.g. {examples}"


def too_long(images: Sequence[CaptionedImage], text_length: int) -> str:
    """Captions with more than ``text_length`` tokens (start and end included), which are cut."""
    tokenizer = get_tokenizer()
    found = []
    total = 0
    for image in images:
        for position, caption in enumerate(image.captions):
            total += 1
            length = len(tokenizer.encode(caption)) + 2
            if length > text_length:
                found.append((length, image.index, position))
    if not found:
        return ""
    longest = max(found)
    examples = "; ".join(f"record {index} captions[{position}]" for _, index, position in found[:EXAMPLES])
    return (
        f"{len(found)} of {total} caption(s) are longer than data.text_length={text_length} tokens (start and "
        f"end tokens included) and get truncated; the longest has {longest[0]} tokens (record {longest[1]} "
        f"captions[{longest[2]}]), e.g. {examples}"
    )


def caption_warnings(images: Sequence[CaptionedImage], text_length: int) -> List[str]:
    """Every caption warning of ``images``, one line each, with counts and examples (empty: none)."""
    found = [
        shared_across_identities(images),
        duplicated_on_one_image(images),
        too_short(images),
        too_long(images, text_length),
    ]
    return [warning for warning in found if warning]
