"""The backbone's activation is the one the weights were trained with (open_clip's own metadata,
read locally: nothing is downloaded), checked on tiny random weights saved here."""

from __future__ import annotations

import json
import logging

import open_clip
import pytest
import safetensors.torch
import torch
from torch import nn

from configs.defaults import Config, ModelConfig
from model.build import build_model, model_from_checkpoint
from model.clip import GELU_MARKER, ClipArch, create_clip
from model.clip_weights import check_pretrain
from model.open_clip_config import spec_for_tag
from model.weights_file import WeightsError, WeightsNotFoundError

TINY = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 1},
}


@pytest.mark.parametrize(
    "model, tag, quick_gelu",
    [
        ("ViT-B-16", "openai", True),  # OpenAI's weights keep QuickGELU
        ("ViT-B-16", "laion2b_s34b_b88k", False),  # LAION: plain GELU
        ("ViT-B-16", "datacomp_xl_s13b_b90k", False),  # DataComp: plain GELU
        ("ViT-B-16", "dfn2b", True),  # the tag says QuickGELU though ViT-B-16's config does not
        ("ViT-B-32", "laion400m_e32", True),
        ("ViT-B-16-quickgelu", "metaclip_400m", True),
    ],
)
def test_the_tag_decides_the_activation(model, tag, quick_gelu):
    assert spec_for_tag(model, tag, "model.pretrain").quick_gelu is quick_gelu


@pytest.mark.parametrize(
    "pretrain, fragment",
    [
        ("open_clip:RN50/openai", "vision_cfg.layers=[3, 4, 6, 3] (a ResNet image tower)"),
        ("open_clip:ViT-B-16-SigLIP/webli", "text_cfg.pool_type='last'"),
        ("open_clip:ViT-L-14/laion2b_s32b_b82k", "image mean (0.5, 0.5, 0.5)"),
        ("open_clip:ViT-H-14/laion2b_s32b_b79k", "vision_cfg.head_width=80"),
    ],
)
def test_architectures_this_backbone_does_not_build_are_refused_naming_the_tag(pretrain, fragment):
    with pytest.raises(WeightsError) as caught:
        check_pretrain(pretrain)
    message = str(caught.value)
    assert message.startswith(f"model.pretrain={pretrain!r}: these weights need") and fragment in message
    assert "\n" not in message


def test_an_unknown_tag_is_named():
    with pytest.raises(WeightsNotFoundError, match="open_clip has no model 'ViT-B-16' with weights 'nowhere'"):
        check_pretrain("open_clip:ViT-B-16/nowhere")


def _save_open_clip(path, quick_gelu: bool, seed: int = 0) -> open_clip.model.CLIP:
    torch.manual_seed(seed)
    clip = open_clip.model.CLIP(**TINY, quick_gelu=quick_gelu).eval()
    torch.save(clip.state_dict(), path)
    return clip


def _activations(clip) -> set:
    return {type(block.mlp.gelu) for block in [*clip.visual.transformer.resblocks, *clip.transformer.resblocks]}


def _same_outputs(ours, reference) -> bool:
    images, ids = torch.randn(2, 3, 32, 32), torch.randint(1, 1000, (2, 77))
    with torch.no_grad():
        return torch.allclose(
            ours.eval().encode_image(images)[0], reference.encode_image(images), atol=1e-6
        ) and torch.allclose(ours.encode_text(ids), reference.encode_text(ids), atol=1e-6)


@pytest.mark.parametrize("quick_gelu", [False, True])
def test_open_clip_config_beside_the_file_decides(tmp_path, quick_gelu):
    reference = _save_open_clip(tmp_path / "open_clip_pytorch_model.bin", quick_gelu)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {**TINY, "quick_gelu": quick_gelu}}))
    check_pretrain(str(tmp_path / "open_clip_pytorch_model.bin"))
    clip, arch = create_clip(str(tmp_path / "open_clip_pytorch_model.bin"), (32, 32))
    assert arch.quick_gelu is quick_gelu
    assert _activations(clip) == {open_clip.transformer.QuickGELU if quick_gelu else nn.GELU}
    assert _same_outputs(clip, reference)  # open_clip's own model, same weights, same activation


def test_a_named_open_clip_model_decides_for_a_file(tmp_path):
    config_dir = tmp_path / "configs"
    config_dir.mkdir()
    (config_dir / "fmfa-test-tiny-gelu.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(config_dir)
    weights = tmp_path / "weights.bin"
    reference = _save_open_clip(weights, quick_gelu=False, seed=1)
    clip, arch = create_clip(f"open_clip:fmfa-test-tiny-gelu/{weights}", (32, 32))
    assert not arch.quick_gelu and _same_outputs(clip, reference)
    with pytest.raises(WeightsError, match="do not match open_clip model config ViT-B-16: embed_dim 64 .config: 512."):
        create_clip(f"open_clip:ViT-B-16/{weights}", (32, 32))


def test_a_file_that_says_nothing_is_taken_as_openai_with_a_warning(tmp_path, caplog):
    reference = _save_open_clip(tmp_path / "weights.bin", quick_gelu=True)
    with caplog.at_level(logging.WARNING, logger="model.clip"):
        clip, arch = create_clip(str(tmp_path / "weights.bin"), (32, 32))
    assert arch.quick_gelu and _same_outputs(clip, reference)
    assert "does not say which activation" in caplog.text and "open_clip:MODEL/" in caplog.text


def test_a_gelu_model_checkpoint_keeps_its_activation(tmp_path):
    _save_open_clip(tmp_path / "open_clip_pytorch_model.bin", quick_gelu=False)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    cfg = Config(
        model=ModelConfig(pretrain=str(tmp_path / "open_clip_pytorch_model.bin"), image_size=[32, 16], cmt_depth=1)
    )
    model = build_model(cfg, num_classes=3).eval()
    assert GELU_MARKER in model.base_model.state_dict()
    torch.save({"model": model.state_dict()}, tmp_path / "best.pth")
    loaded = model_from_checkpoint(str(tmp_path / "best.pth"), image_size=(32, 16))
    assert _activations(loaded.base_model) == {nn.GELU}
    images, ids = torch.randn(2, 3, 32, 16), torch.randint(1, 1000, (2, 77))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images))
        torch.testing.assert_close(loaded.encode_text(ids), model.encode_text(ids))


def test_random_init_and_paper_configs_keep_quick_gelu():
    clip, arch = create_clip(
        "none",
        (32, 16),
        ClipArch(embed_dim=64, vision_width=64, vision_layers=1, patch_size=8, text_width=64, text_layers=1),
    )
    assert arch.quick_gelu and _activations(clip) == {open_clip.transformer.QuickGELU}
    assert GELU_MARKER not in clip.state_dict()


def test_a_failed_download_is_a_one_line_error_naming_the_tag(monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Failed to download weights for tag 'laion2b_s34b_b88k': no network")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(WeightsNotFoundError) as caught:
        create_clip("open_clip:ViT-B-16/laion2b_s34b_b88k", (384, 128))
    message = str(caught.value)
    assert message.startswith("open_clip:ViT-B-16/laion2b_s34b_b88k: open_clip could not get the weights (Failed")
    assert "model.pretrain=open_clip:ViT-B-16/PATH_TO_FILE" in message and "\n" not in message


def test_a_safetensors_file_from_the_hub_layout_loads(tmp_path):
    """open_clip_model.safetensors with open_clip_config.json beside it, as the hub ships them;
    a file that is not safetensors is refused by name."""
    reference = _save_open_clip(tmp_path / "reference.bin", quick_gelu=False, seed=2)
    safetensors.torch.save_file(reference.state_dict(), tmp_path / "open_clip_model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY}))
    clip, arch = create_clip(str(tmp_path / "open_clip_model.safetensors"), (32, 32))
    assert not arch.quick_gelu and _same_outputs(clip, reference)
    torch.save(reference.state_dict(), tmp_path / "pickled.safetensors")
    with pytest.raises(WeightsError, match=r"pickled\.safetensors: not a readable safetensors file"):
        create_clip(str(tmp_path / "pickled.safetensors"), (32, 32))


def test_a_trained_model_saved_as_safetensors_loads_for_test(tmp_path):
    sizes = dict(embed_dim=64, vision_width=64, vision_layers=1, patch_size=8, text_width=64, text_layers=1)
    cfg = Config(model=ModelConfig(pretrain="none", image_size=[32, 16], cmt_depth=1, **sizes))
    model = build_model(cfg, num_classes=3).eval()
    safetensors.torch.save_file(model.state_dict(), tmp_path / "best.safetensors")
    loaded = model_from_checkpoint(str(tmp_path / "best.safetensors"), image_size=(32, 16))
    images, ids = torch.randn(2, 3, 32, 16), torch.randint(1, 1000, (2, 77))
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(images), model.encode_image(images))
        torch.testing.assert_close(loaded.encode_text(ids), model.encode_text(ids))
    assert (loaded.num_classes, loaded.cmt_depth) == (3, 1)
