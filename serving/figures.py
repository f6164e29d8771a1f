"""Figures for people: ranked image rows (search, retrieval) and EFA similarity maps.

matplotlib with the Agg backend (files only, no display needed).
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

CORRECT, WRONG = "#1a9e3f", "#d62728"


def _frame(axis, colour: Optional[str]) -> None:
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_visible(colour is not None)
        if colour is not None:
            spine.set_edgecolor(colour)
            spine.set_linewidth(4)


def ranked_row(
    images: Sequence[Image.Image],
    labels: Sequence[str],
    title: str,
    output: Path,
    correct: Optional[Sequence[bool]] = None,
    query_image: Optional[Image.Image] = None,
) -> Path:
    """One row of ranked images with a label under each; frames green/red when ``correct`` is
    given; an optional leading ground-truth image; the (wrapped) text as the title."""
    count = len(images) + (query_image is not None)
    figure, axes = plt.subplots(1, count, figsize=(1.3 * count + 0.4, 4.2), squeeze=False)
    axes = list(axes[0])
    if query_image is not None:
        axis = axes.pop(0)
        axis.imshow(query_image)
        axis.set_xlabel("ground truth", fontsize=8)
        _frame(axis, "#777777")
    for index, (axis, image, label) in enumerate(zip(axes, images, labels)):
        axis.imshow(image)
        axis.set_xlabel(label, fontsize=8)
        _frame(axis, None if correct is None else (CORRECT if correct[index] else WRONG))
    figure.suptitle("\n".join(textwrap.wrap(title, 110)), fontsize=9)
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output


def similarity_maps(
    image: Image.Image, words: List[str], before: np.ndarray, after: np.ndarray, caption: str, output: Path
) -> Path:
    """Per word: the image, then its token-to-patch similarity over the patch grid before and
    after sparsification, overlaid on the image (``before``/``after``: [words, rows, cols];
    each panel's colours span its own range, red = most similar)."""
    figure, axes = plt.subplots(len(words), 3, figsize=(5.4, 3.3 * len(words) + 0.6), squeeze=False)
    height, width = image.size[1], image.size[0]
    for row, word in enumerate(words):
        axes[row][0].imshow(image)
        axes[row][0].set_ylabel(word, fontsize=10)
        # Patches zeroed by the sparsification are left uncoloured.
        pruned = np.ma.masked_where(after[row] == 0, after[row])
        for column, (grid, name) in enumerate(((before[row], "before"), (pruned, "after sparsification")), 1):
            axes[row][column].imshow(image)
            axes[row][column].imshow(grid, cmap="jet", alpha=0.5, extent=(0, width, height, 0), interpolation="nearest")
            axes[row][column].set_title(name, fontsize=8)
        for axis in axes[row]:
            _frame(axis, None)
    figure.suptitle("\n".join(textwrap.wrap(caption, 70)), fontsize=8)
    figure.tight_layout()
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output
