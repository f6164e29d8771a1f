"""The open_clip backbone reproduces the reference's token outputs at 384 x 128."""

import pytest
import torch
from conftest import assert_rel_close, load_golden

from model.clip import ClipArch, create_clip, encode_image_tokens, encode_text_tokens


def test_golden_backbone_tokens(golden):
    recorded = load_golden(golden, "backbone.pt")
    clip, arch = create_clip(str(golden / "tiny_clip_openai_state_dict.pt"), tuple(recorded["image_size"]))
    assert arch.embed_dim == 64 and arch.vision_layers == 2 and arch.patch_size == 16
    with torch.no_grad():
        image_tokens = encode_image_tokens(clip.eval(), recorded["images"])
        text_tokens = encode_text_tokens(clip, recorded["text_ids"])
    assert_rel_close(image_tokens, recorded["image_tokens"])
    assert_rel_close(text_tokens, recorded["text_tokens"])


def test_position_embedding_resize_is_bilinear_without_antialias(golden):
    state = load_golden(golden, "tiny_clip_openai_state_dict.pt")
    clip, _ = create_clip(str(golden / "tiny_clip_openai_state_dict.pt"), (384, 128))
    grid = state["visual.positional_embedding"][1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    expected = torch.nn.functional.interpolate(grid, size=(24, 8), mode="bilinear", align_corners=False)
    expected = expected.permute(0, 2, 3, 1).reshape(192, -1)
    torch.testing.assert_close(clip.visual.positional_embedding.detach()[1:], expected)


def test_random_init_shapes():
    arch = ClipArch(embed_dim=32, vision_width=64, vision_layers=1, text_width=64, text_layers=1)
    clip, same = create_clip("none", (64, 32), arch)
    assert same == arch and not hasattr(clip, "logit_scale")
    images, ids = torch.randn(2, 3, 64, 32), torch.randint(1, 100, (2, 77))
    assert encode_image_tokens(clip, images).shape == (2, 1 + 4 * 2, 32)
    assert encode_text_tokens(clip, ids).shape == (2, 77, 32)


def test_image_size_must_be_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="not divisible by the patch size 16"):
        create_clip("none", (380, 128), ClipArch(vision_layers=1, text_layers=1))


def test_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "ViT-B-16.pt"
    with pytest.raises(FileNotFoundError, match="ViT-B-16.pt"):
        create_clip(str(missing), (384, 128))
