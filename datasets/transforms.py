"""Image transforms of docs/method.md, "Data" (the reference's, on PIL images)."""

from __future__ import annotations

from typing import Sequence

import torchvision.transforms as T

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def build_transform(image_size: Sequence[int], train: bool = False, augment: bool = True) -> T.Compose:
    """Eval: resize to (H, W), to tensor, CLIP normalisation. Train with ``augment``: also
    horizontal flip (0.5), pad 10 + random crop back to (H, W), and random erasing (scale
    0.02-0.4, filled with the mean) after normalisation. Train without ``augment`` = eval."""
    size = (int(image_size[0]), int(image_size[1]))
    normalize = T.Normalize(mean=CLIP_MEAN, std=CLIP_STD)
    if not (train and augment):
        return T.Compose([T.Resize(size), T.ToTensor(), normalize])
    return T.Compose(
        [
            T.Resize(size),
            T.RandomHorizontalFlip(0.5),
            T.Pad(10),
            T.RandomCrop(size),
            T.ToTensor(),
            normalize,
            T.RandomErasing(scale=(0.02, 0.4), value=CLIP_MEAN),
        ]
    )
