"""CLIP BPE tokenizer with the reference's (IRRA/FMFA) vocabulary.

The BPE itself is open_clip's (its merges file, cleaning and merge loop); only the
vocabulary layout differs from open_clip's tokenizer:

* ids 0..49404: byte tokens, byte``</w>`` tokens and the BPE merges, *without* the
  token of the last merge (the reference pops it to make room for the mask token);
* 49405 = ``<|mask|>``, 49406 = ``<|startoftext|>``, 49407 = ``<|endoftext|>``.

Checkpoints of the reference and its MLM head (49408 classes) depend on this layout.
The reference keeps the dropped merge in its merge table, so the one word that would
produce it ("jekyll") makes the reference fail with a KeyError; here that merge is
left out of the table too, and the word is split into the two tokens it merges.
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from typing import Iterable

import regex
import torch
from open_clip.tokenizer import SimpleTokenizer, bytes_to_unicode, default_bpe, get_clean_fn

from configs.defaults import CONTEXT_LENGTH, VOCAB_SIZE

MASK_ID = 49405
SOT_ID = 49406
EOT_ID = 49407

_MASK, _SOT, _EOT = "<|mask|>", "<|startoftext|>", "<|endoftext|>"
_NUM_MERGES = 49152 - 256 - 2  # the merges CLIP uses, as in open_clip


class FMFATokenizer(SimpleTokenizer):
    """open_clip's SimpleTokenizer with the reference vocabulary (see module docstring)."""

    def __init__(self, bpe_path: str | None = None):
        # Not calling super().__init__: it would build open_clip's vocabulary. We set the
        # attributes its `bpe` and `encode` methods read.
        bpe_path = bpe_path or default_bpe()
        lines = gzip.open(bpe_path).read().decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1:_NUM_MERGES]]  # last merge dropped
        byte_tokens = list(bytes_to_unicode().values())
        vocab = byte_tokens + [t + "</w>" for t in byte_tokens] + ["".join(m) for m in merges]
        vocab += [_MASK, _SOT, _EOT]
        assert len(vocab) == VOCAB_SIZE, len(vocab)
        self.byte_encoder = bytes_to_unicode()
        self.byte_decoder = {v: k for k, v in self.byte_encoder.items()}
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.decoder = {i: tok for tok, i in self.encoder.items()}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.cache = {_SOT: _SOT, _EOT: _EOT}
        # The reference recognises its own special-token spellings inside captions.
        self.pat = regex.compile(
            r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.clean_fn = get_clean_fn("lower")  # ftfy + html unescape, whitespace, lower
        self.vocab_size = VOCAB_SIZE
        self.sot_token_id, self.eot_token_id = SOT_ID, EOT_ID
        self.all_special_ids = [MASK_ID, SOT_ID, EOT_ID]
        self.context_length = CONTEXT_LENGTH
        self.reduction_fn = None


@lru_cache(maxsize=1)
def get_tokenizer() -> FMFATokenizer:
    """The process-wide tokenizer (building the vocabulary takes about a second)."""
    return FMFATokenizer()


def tokenize(caption: str, text_length: int = CONTEXT_LENGTH, truncate: bool = True) -> torch.Tensor:
    """Token ids of one caption: ``[SOT] + bpe + [EOT]``, zero-padded to ``text_length``.

    A caption longer than ``text_length`` is cut with EOT forced into the last slot, or,
    with ``truncate=False``, rejected with a ValueError.
    """
    if not isinstance(caption, str):
        raise TypeError(f"caption must be a str, got {type(caption).__name__}: {caption!r}")
    tokens = [SOT_ID] + get_tokenizer().encode(caption) + [EOT_ID]
    if len(tokens) > text_length:
        if not truncate:
            raise ValueError(f"caption has {len(tokens)} tokens, more than text_length={text_length}: {caption[:80]!r}")
        tokens = tokens[:text_length]
        tokens[-1] = EOT_ID
    ids = torch.zeros(text_length, dtype=torch.long)
    ids[: len(tokens)] = torch.tensor(tokens, dtype=torch.long)
    return ids


def tokenize_batch(captions: Iterable[str], text_length: int = CONTEXT_LENGTH, truncate: bool = True) -> torch.Tensor:
    """Stack :func:`tokenize` over several captions -> LongTensor[N, text_length]."""
    return torch.stack([tokenize(c, text_length, truncate) for c in captions])
