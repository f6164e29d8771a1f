"""The project's tokenizer as a Hugging Face ``tokenizers`` file (``tokenizer.json``).

An exported model is used without this repository: its captions are tokenized by the
maintained ``tokenizers`` library from a file holding the project's vocabulary (byte
tokens, byte``</w>`` tokens, the BPE merges without the last one, ``<|mask|>`` 49405,
``<|startoftext|>`` 49406, ``<|endoftext|>`` 49407) and its steps:

* normalisation: NFC, every run of whitespace -> one space, strip, lower case (with Python's
  final sigma; U+0345, which the project's pattern skips, separates words);
* pre-tokenisation: the project's word pattern, then byte-level mapping;
* BPE with ``</w>`` ending each word; ``[SOT] + bpe + [EOT]``; cut to the context length
  with EOT kept last; zero-padded.

What ``tokenizers`` cannot do is ftfy's repair of broken text (mojibake, HTML entities,
curly quotes and dashes, ligatures, full-width letters, control characters): such input
gives the project's ids once passed through :func:`clean_caption`
(``html.unescape(html.unescape(ftfy.fix_text(text)))``, the project's own cleaning) first.
Two inputs still differ: a literal ``<|startoftext|>`` / ``<|endoftext|>`` right after
punctuation (the project's pattern swallows it into the punctuation run; ``tokenizers``
finds special tokens anywhere), and letters newer than Python's Unicode tables, which
Python's ``str.lower`` leaves as they are (55 cased ones for Python 3.11's Unicode 14).
"""

from __future__ import annotations

import html
from typing import List, Sequence

import ftfy
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

from datasets.tokenizer import EOT_ID, SOT_ID, get_tokenizer, tokenize

PAD_ID = 0
_SOT, _EOT = "<|startoftext|>", "<|endoftext|>"
# Python's str.lower turns a capital sigma into the final one when, skipping case-ignorable
# characters, a cased character comes before it and none after; ``tokenizers``' Lowercase
# always gives the medial one. This is Unicode's Final_Sigma condition, as a regex.
_CASED = r"[\p{Cased}&&\P{Case_Ignorable}]"
_FINAL_SIGMA = rf"(?<={_CASED}\p{{Case_Ignorable}}*)\x{{03A3}}(?!\p{{Case_Ignorable}}*{_CASED})"
# The project's word pattern (case-insensitive in Python's ``regex``) matches no part of
# U+0345, which is not a letter but case-folds to one: it separates words, giving no token.
_UNMATCHED = "\u0345"


def build_hf_tokenizer(context_length: int) -> Tokenizer:
    """A ``tokenizers.Tokenizer`` giving the project tokenizer's ids, padded to ``context_length``."""
    project = get_tokenizer()
    merges = sorted(project.bpe_ranks, key=project.bpe_ranks.get)
    bpe = models.BPE(
        vocab=dict(project.encoder),
        merges=merges,
        end_of_word_suffix="</w>",
        continuing_subword_prefix="",
        fuse_unk=False,
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.NFC(),
            normalizers.Replace(Regex(_FINAL_SIGMA), "\u03c2"),
            normalizers.Replace(_UNMATCHED, " "),
            normalizers.Replace(Regex(r"\s+"), " "),
            normalizers.Strip(),
            normalizers.Lowercase(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(project.pat.pattern), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    # The project reads its own special-token spellings inside a caption (after lower-casing).
    tokenizer.add_special_tokens(
        [AddedToken(_SOT, normalized=True, special=True), AddedToken(_EOT, normalized=True, special=True)]
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{_SOT} $A {_EOT}", special_tokens=[(_SOT, SOT_ID), (_EOT, EOT_ID)]
    )
    tokenizer.enable_truncation(max_length=context_length)  # keeps room for SOT and EOT
    tokenizer.enable_padding(length=context_length, pad_id=PAD_ID, pad_token=project.decoder[PAD_ID])
    return tokenizer


def clean_caption(caption: str) -> str:
    """The project's text repair, to run before tokenizer.json: ftfy, then HTML entities (twice)."""
    return html.unescape(html.unescape(ftfy.fix_text(caption)))


def tokenizer_mismatches(tokenizer_json: str, captions: Sequence[str], length: int) -> List[str]:
    """The captions that tokenizer.json (after :func:`clean_caption`) tokenizes unlike the project."""
    encoded = Tokenizer.from_str(tokenizer_json).encode_batch([clean_caption(c) for c in captions])
    return [c for c, e in zip(captions, encoded) if e.ids != tokenize(c, length).tolist()]
