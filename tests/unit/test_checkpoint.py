"""model_from_checkpoint: every supported layout, and clear refusals for everything else."""

import os
import pickle

import open_clip
import pytest
import torch
from conftest import assert_rel_close, load_golden, tiny_batch, tiny_config
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from model.build import build_model, model_from_checkpoint


def test_reference_checkpoint_gives_the_reference_embeddings(golden):
    recorded = load_golden(golden, "reference_checkpoint_outputs.pt")
    model = model_from_checkpoint(str(golden / "reference_checkpoint.pth"))
    assert not model.training
    assert model.num_classes == recorded["num_classes"] and model.cmt_depth == recorded["cmt_depth"]
    with torch.no_grad():
        assert_rel_close(model.encode_image(recorded["images"]), recorded["image_embeds"])
        assert_rel_close(model.encode_text(recorded["text_ids"]), recorded["text_embeds"])
    assert model.encode_image_tokens(recorded["images"]).shape == (3, 193, 64)
    assert model.encode_text_tokens(recorded["text_ids"]).shape == (3, 77, 64)


def test_reference_checkpoint_without_module_prefix(golden, tmp_path):
    state = load_golden(golden, "reference_checkpoint.pth")["model"]
    path = tmp_path / "plain.pth"
    torch.save({"model": {k.removeprefix("module."): v for k, v in state.items()}}, path)
    recorded = load_golden(golden, "reference_checkpoint_outputs.pt")
    with torch.no_grad():
        assert_rel_close(model_from_checkpoint(str(path)).encode_text(recorded["text_ids"]), recorded["text_embeds"])


def test_bare_openai_state_dict_gives_a_model_without_heads(golden):
    model = model_from_checkpoint(str(golden / "tiny_clip_openai_state_dict.pt"))
    assert not hasattr(model, "classifier") and not hasattr(model, "mlm_head")
    assert model.encode_image(torch.randn(2, 3, 384, 128)).shape == (2, 64)


def test_own_checkpoint_round_trip(tmp_path):
    model = build_model(tiny_config(), num_classes=5).eval()
    path = tmp_path / "last.pth"
    torch.save({"model": model.state_dict(), "epoch": 3}, path)
    loaded = model_from_checkpoint(str(path), image_size=(64, 32))
    assert loaded.num_classes == 5 and loaded.cmt_depth == 1
    batch = tiny_batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(batch["images"]), model.encode_image(batch["images"]))
        torch.testing.assert_close(loaded.encode_text(batch["caption_ids"]), model.encode_text(batch["caption_ids"]))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value, msg=key)


def _tiny_open_clip():
    return open_clip.model.CLIP(
        32,
        CLIPVisionCfg(layers=1, width=64, patch_size=16, image_size=32),
        CLIPTextCfg(context_length=77, vocab_size=49408, width=64, heads=1, layers=1),
        quick_gelu=True,
    ).eval()


def test_torchscript_archive_loads_like_openai_release(tmp_path):
    clip = _tiny_open_clip()
    path = tmp_path / "ViT-tiny.pt"
    torch.jit.script(clip).save(str(path))
    model = model_from_checkpoint(str(path), image_size=(32, 32))
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(images), clip.encode_image(images))


def test_open_clip_checkpoint_with_module_prefix(tmp_path):
    clip = _tiny_open_clip()
    path = tmp_path / "epoch_1.pt"
    torch.save({"epoch": 1, "state_dict": {"module." + k: v for k, v in clip.state_dict().items()}}, path)
    ids = torch.randint(1, 1000, (2, 77))
    with torch.no_grad():
        torch.testing.assert_close(model_from_checkpoint(str(path), (32, 32)).encode_text(ids), clip.encode_text(ids))


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned_marker",))


def test_pickle_carrying_code_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"model": _RunsCode()}, f)
    with pytest.raises(ValueError, match="evil.pth: refused to load"):
        model_from_checkpoint(str(path))
    assert not (tmp_path / "pwned_marker").exists()


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth"):
        model_from_checkpoint(str(tmp_path / "nothing.pth"))


def test_a_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("this is not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth: .*not a"):
        model_from_checkpoint(str(path))


@pytest.mark.parametrize("content", [{"optimizer": {"lr": 0.1}}, {"model": {"foo.weight": torch.zeros(2)}}, [1, 2]])
def test_unknown_layout_says_what_was_expected(tmp_path, content):
    path = tmp_path / "odd.pth"
    torch.save(content, path)
    with pytest.raises(ValueError, match="odd.pth: unknown checkpoint layout.*Expected one of"):
        model_from_checkpoint(str(path))
