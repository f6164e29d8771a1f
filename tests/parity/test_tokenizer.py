"""The tokenizer reproduces the reference's ids and special tokens."""

import pytest
import torch
from conftest import load_golden

from datasets.tokenizer import EOT_ID, MASK_ID, SOT_ID, VOCAB_SIZE, get_tokenizer, tokenize, tokenize_batch


def test_golden_token_ids(golden):
    recorded = load_golden(golden, "tokens.pt")
    assert (MASK_ID, SOT_ID, EOT_ID) == (recorded["mask_id"], recorded["sot_id"], recorded["eot_id"])
    assert torch.equal(tokenize_batch(recorded["captions"]), recorded["token_ids"])


def test_layout_padding_and_truncation():
    ids = tokenize("a man in a black jacket")
    assert ids.dtype == torch.long and ids.shape == (77,)
    length = int((ids > 0).sum())
    assert ids[0] == SOT_ID and ids[length - 1] == EOT_ID and not ids[length:].any()
    long_ids = tokenize("very " * 200)
    assert long_ids[-1] == EOT_ID and (long_ids > 0).all()
    assert tokenize("a b c", text_length=4).tolist() == [SOT_ID, tokenize("a")[1], tokenize("b")[1], EOT_ID]


def test_too_long_without_truncation_is_an_error():
    with pytest.raises(ValueError, match="more than text_length=77"):
        tokenize("very " * 200, truncate=False)


def test_non_string_caption_is_an_error():
    with pytest.raises(TypeError, match="caption must be a str"):
        tokenize(None)


def test_vocabulary_has_the_reference_size_and_no_id_beyond_it():
    tokenizer = get_tokenizer()
    assert len(tokenizer.encoder) == VOCAB_SIZE
    assert tokenizer.encoder["<|mask|>"] == MASK_ID
    # The reference dropped the last merge's token ("jekyll"); the word still tokenizes, without the mask id.
    ids = tokenize("jekyll")
    assert MASK_ID not in ids.tolist() and int((ids > 0).sum()) == 4
