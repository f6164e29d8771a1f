"""The image transforms on images of another size than the model's.

The real sets' images are not 384 x 128, so every gallery image goes through the Resize. The
authors' transform is torchvision's ``Resize((H, W))`` with its defaults on PIL images: PIL's
own bilinear resize (PIL filters over the source footprint when it shrinks, i.e. antialiased),
then ``ToTensor`` and CLIP's normalisation. The expected tensors here are computed from those
steps with PIL and numpy alone, so another interpolation, or a resize of the tensor without
antialiasing, changes every pixel the comparison looks at.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from data_fixtures import make_dataset
from PIL import Image

from configs.defaults import Config, DataConfig, ModelConfig
from datasets.build import build_eval_loaders, read_dataset
from datasets.transforms import build_transform

# CLIP's normalisation, written out here (docs/method.md, "Data"), not read from datasets.transforms.
MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)
MODEL_SIZE = (384, 128)  # (H, W) of the paper's model
# One 8-bit level after normalisation is 1 / 255 / 0.27 = 0.0145: a tolerance far below it.
ATOL = 1e-5


def expected_tensor(image: Image.Image, size=MODEL_SIZE) -> torch.Tensor:
    """PIL bilinear resize to (W, H), then [0, 1] floats channel-first, then (x - mean) / std."""
    height, width = size
    resized = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
    return torch.from_numpy(((resized - MEAN) / STD).transpose(2, 0, 1).copy())


def random_image(width: int, height: int, seed: int) -> Image.Image:
    """A smooth gradient plus noise: resampling filters disagree on both."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, width, dtype=np.float32)[None, :, None] + np.linspace(0, 55, height)[:, None, None]
    pixels = np.clip(ramp + rng.integers(0, 60, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


@pytest.mark.parametrize("width, height", [(37, 100), (260, 500), (128, 384)])
def test_eval_transform_is_pil_bilinear_resize_then_clip_normalisation(width, height):
    """Upscaled (37 x 100), shrunk (260 x 500, where antialiasing matters) and already at size."""
    image = random_image(width, height, seed=width)
    ours = build_transform(MODEL_SIZE, train=False)(image)
    assert ours.shape == (3, *MODEL_SIZE) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected_tensor(image), rtol=0, atol=ATOL)


def test_training_transform_without_augmentation_resizes_the_same_way():
    image = random_image(260, 500, seed=3)
    ours = build_transform(MODEL_SIZE, train=True, augment=False)(image)
    torch.testing.assert_close(ours, expected_tensor(image), rtol=0, atol=ATOL)


def test_gallery_images_of_another_size_reach_the_model_resized_like_the_authors(tmp_path):
    """Through build_eval_loaders: fixture images of 500 x 260 (H x W) read from JPEG files on
    disk, at the model's 384 x 128."""
    folder = make_dataset(tmp_path, "CUHK-PEDES", image_size=(500, 260))
    read_dataset.cache_clear()
    cfg = Config(
        model=ModelConfig(pretrain="none", image_size=list(MODEL_SIZE)),
        data=DataConfig(root=str(tmp_path), dataset="CUHK-PEDES", num_workers=0),
    )
    loaders = build_eval_loaders(cfg, split="test")
    images = torch.cat([batch for _, batch in loaders.images])
    paths = [Path(path) for path in loaders.eval_set.image_paths]
    assert len(paths) == images.shape[0] > 0 and all(folder in path.parents for path in paths)
    for path, ours in zip(paths, images, strict=True):
        with Image.open(path) as image:
            assert image.size == (260, 500)
            torch.testing.assert_close(ours, expected_tensor(image), rtol=0, atol=ATOL)


def matching_fraction(ours: torch.Tensor, resized: torch.Tensor) -> float:
    """The largest share of pixels where ``ours`` equals ``resized`` flipped or not, padded by
    10 and cropped back at some offset: the augmented transform's geometry, whose random
    erasing hides at most 40% of the image."""
    height, width = resized.shape[1:]
    best = 0.0
    for flipped in (resized, resized.flip(-1)):
        padded = torch.nn.functional.pad(flipped, (10, 10, 10, 10), value=float("nan"))
        for top in range(21):
            for left in range(21):
                crop = padded[:, top : top + height : 3, left : left + width : 3]  # every 3rd pixel: enough
                best = max(best, float((crop - ours[:, ::3, ::3]).abs().le(ATOL).all(0).float().mean()))
    return best


@pytest.mark.parametrize("seed", [0, 1])
def test_augmented_training_transform_crops_the_bilinear_resize(seed):
    """With augmentation the picture is the same PIL bilinear resize, moved by the flip and the
    padded crop: at least the 60% of pixels that random erasing leaves equal it exactly. Any
    other interpolation (nearest, bicubic) matches almost no pixel of the noisy image."""
    image = random_image(260, 500, seed=seed)
    torch.manual_seed(seed)
    ours = build_transform(MODEL_SIZE, train=True, augment=True)(image)
    resized = expected_tensor(image)
    # The padding is black before normalisation: (0 - mean) / std, which no resized pixel has here.
    assert matching_fraction(ours, resized) >= 0.55
