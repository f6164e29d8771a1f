"""EFA word-to-patch maps: where the words of a caption look in an image, before and after
EFA's sparsification (visualize.py efa, the search page)."""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from configs.errors import UserError
from datasets.tokenizer import EOT_ID, SOT_ID, tokenize
from datasets.transforms import build_transform
from model.objectives import text_patch_affinity
from serving.inference import LoadedModel


def word_positions(ids: torch.Tensor, word: str, text_length: int, caption: str) -> List[int]:
    """Positions of ``word``'s BPE tokens inside the caption ``ids`` (first occurrence)."""
    pieces = [t for t in tokenize(word, text_length).tolist() if t not in (0, SOT_ID, EOT_ID)]
    row = ids.tolist()
    for start in range(len(row) - len(pieces) + 1):
        if pieces and row[start : start + len(pieces)] == pieces:
            return list(range(start, start + len(pieces)))
    raise UserError(f"word {word!r} is not in the caption {caption!r}")


def default_words(caption: str, count: int = 3) -> List[str]:
    """The first ``count`` words of more than three characters (without a trailing comma or full
    stop): the content words a reader would look for."""
    return [w.strip(".,") for w in caption.split() if len(w.strip(".,")) > 3][:count]


@torch.no_grad()
def word_maps(
    loaded: LoadedModel, image: Image.Image, caption: str, words: Sequence[str]
) -> Tuple[Image.Image, np.ndarray, np.ndarray]:
    """(the image at the model's size, maps before and after sparsification [words, rows, cols]):
    per word, the EFA token-to-patch affinity of its tokens (averaged) over the patch grid."""
    cfg = loaded.cfg
    ids = tokenize(caption, cfg.data.text_length)
    positions = [word_positions(ids, word, cfg.data.text_length, caption) for word in words]
    pixels = build_transform(cfg.model.image_size, train=False)(image).unsqueeze(0).to(loaded.device)
    with loaded.autocast:
        text_tokens = loaded.model.encode_text_tokens(ids.unsqueeze(0).to(loaded.device)).float()
        patches = loaded.model.encode_image_tokens(pixels).float()[:, 1:]
    dense, sparse = (a[0].cpu() for a in text_patch_affinity(text_tokens, patches, cfg.efa.threshold))
    grid = tuple(loaded.model.base_model.visual.grid_size)
    before, after = (np.stack([a[p].mean(0).reshape(grid).numpy() for p in positions]) for a in (dense, sparse))
    shown = image.resize((cfg.model.image_size[1], cfg.model.image_size[0]))
    return shown, before, after
