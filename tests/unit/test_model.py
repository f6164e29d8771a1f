"""The FMFA model and its criterion: heads per loss, ``criterion(model(batch), batch)``, errors."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_rel_close, tiny_batch, tiny_config

from configs.defaults import Config
from configs.errors import ConfigError, UserError
from configs.loader import apply_overrides
from configs.validation import LOSS_NAMES, validate
from model.build import build_criterion, build_model

PAPER_LOSSES = ["a-sdm", "mlm", "id", "efa"]


def _config(names="a-sdm+mlm+id+efa", weights=None):
    cfg = tiny_config()
    apply_overrides(cfg, [f"loss.names={names}"])
    return dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, weights=weights or {}))


def _losses(cfg, num_classes=4, batch=None):
    model = build_model(cfg, num_classes)
    return build_criterion(cfg)(model(batch or tiny_batch()), batch or tiny_batch())


def test_full_forward_backward_with_the_paper_losses():
    torch.manual_seed(0)
    cfg = _config()
    model = build_model(cfg, num_classes=4).train()
    batch = tiny_batch()
    losses, metrics = build_criterion(cfg)(model(batch), batch)
    assert list(losses) == PAPER_LOSSES
    assert set(metrics) == {"img_acc", "txt_acc", "mlm_acc"}
    for value in list(losses.values()) + list(metrics.values()):
        assert value.dim() == 0 and torch.isfinite(value)
    assert all(not m.requires_grad for m in metrics.values())
    sum(losses.values()).backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), [
        n for n, g in grads.items() if g is None
    ]
    for part in (
        "base_model.visual.conv1.weight",
        "base_model.token_embedding.weight",
        "classifier.weight",
        "cross_attn.in_proj_weight",
        "mlm_head.fc.weight",
    ):
        assert grads[part].abs().sum() > 0, part


def test_heads_exist_only_for_enabled_losses():
    plain = build_model(_config("sdm"), num_classes=4)
    assert not any(hasattr(plain, h) for h in ("classifier", "cross_attn", "mlm_head"))
    with_id = build_model(_config("itc+id"), num_classes=4)
    assert with_id.classifier.out_features == 4 and not hasattr(with_id, "mlm_head")


@pytest.mark.parametrize("names", ["sdm", "itc", "cmpm", "a-sdm+efa", "sdm+id+mlm", "+".join(LOSS_NAMES)])
def test_each_loss_set_runs(names):
    losses, _ = _losses(_config(names))
    assert list(losses) == [name.strip() for name in names.split("+")]
    assert all(torch.isfinite(v) for v in losses.values())


def test_loss_names_are_parsed_once_into_a_list_spaces_stripped():
    cfg = _config("a-sdm + mlm")
    assert cfg.loss.names == ["a-sdm", "mlm"]
    validate(cfg)
    batch = tiny_batch()
    losses, _ = build_criterion(cfg)(build_model(cfg, 4)(batch), batch)  # once a KeyError 'mlm_ids'
    assert list(losses) == ["a-sdm", "mlm"]


def test_loss_weights_scale_the_terms():
    torch.manual_seed(0)
    base, _ = _losses(_config("sdm+id"))
    torch.manual_seed(0)
    weighted, _ = _losses(_config("sdm+id", {"id": 0.5}))
    torch.testing.assert_close(weighted["id"], 0.5 * base["id"])
    torch.testing.assert_close(weighted["sdm"], base["sdm"])


@pytest.mark.parametrize("spec", ["a-sdm+triplet", "", "sdm+sdm", "SDM", "sdm++mlm"])
def test_unknown_or_malformed_loss_names_are_errors(spec):
    cfg = _config(spec)
    with pytest.raises(ConfigError, match="loss.names"):
        validate(cfg)


def test_weight_for_a_disabled_loss_is_an_error():
    cfg = _config("sdm", {"efa": 2.0})
    with pytest.raises(ConfigError, match=r"loss.weights=\{'efa': 2.0\}"):
        validate(cfg)


def test_public_builders_refuse_a_config_that_never_went_through_load_config():
    """build_criterion and build_model are called from Python with configs built there: an
    unknown loss is refused at the call, and the ID head needs a class count."""
    with pytest.raises(ConfigError, match="loss.names"):
        build_criterion(_config("a-sdm+triplet"))
    with pytest.raises(UserError, match="needs the ID classifier: num_classes > 0"):
        build_model(_config("sdm+id"), num_classes=0)


def test_model_outputs_predictions_and_no_losses():
    cfg = _config()
    out = build_model(cfg, num_classes=4)(tiny_batch())
    assert {
        "image_tokens",
        "text_tokens",
        "image_feats",
        "text_feats",
        "image_logits",
        "text_logits",
        "mlm_scores",
        "mlm_labels",
    } == set(out)
    assert out["image_logits"].shape == (6, 4) and out["mlm_scores"].shape == (6, cfg.model.vocab_size)


def test_mlm_scored_on_labelled_positions_equals_scoring_every_position():
    torch.manual_seed(0)
    cfg = _config("sdm+mlm")
    cfg.data.share_masked_caption = False  # the IRR branch reads mlm_ids
    model = build_model(cfg, num_classes=0)
    batch = tiny_batch()
    batch["mlm_labels"][:, 3] = batch["caption_ids"][:, 3]  # two targets per caption
    losses, metrics = build_criterion(cfg)(model(batch), batch)
    ours = torch.autograd.grad(losses["mlm"], model.mlm_head.dense.weight)[0]
    image_tokens = model.encode_image_tokens(batch["images"])
    x = model.cross_former(model.encode_text_tokens(batch["mlm_ids"]), image_tokens)
    scores = model.mlm_head(x).reshape(-1, model.vocab_size)
    full = F.cross_entropy(scores, batch["mlm_labels"].reshape(-1), ignore_index=0)
    torch.testing.assert_close(losses["mlm"], full)
    torch.testing.assert_close(ours, torch.autograd.grad(full, model.mlm_head.dense.weight)[0])


def test_encoders_return_float32_global_embeddings():
    model = build_model(_config("sdm"), num_classes=0).eval()
    batch = tiny_batch(batch_size=3)
    assert model.encode_image(batch["images"]).shape == (3, 64)
    text = model.encode_text(batch["caption_ids"])
    assert text.dtype == torch.float32 and text.shape == (3, 64)
    eot = batch["caption_ids"].argmax(dim=1)
    torch.testing.assert_close(text, model.encode_text_tokens(batch["caption_ids"])[torch.arange(3), eot])


def test_irr_heads_use_the_reference_initialisation():
    torch.manual_seed(0)
    model = build_model(
        dataclasses.replace(
            _config("sdm+mlm+id"), model=dataclasses.replace(tiny_config().model, embed_dim=256, cmt_depth=4)
        ),
        num_classes=4000,
    )
    width, layers = 256, 4
    expected = {
        "cross_attn.in_proj_weight": width**-0.5,
        "cross_attn.out_proj.weight": width**-0.5 * (2 * layers) ** -0.5,
        "cross_modal_transformer.resblocks.3.attn.in_proj_weight": width**-0.5,
        "cross_modal_transformer.resblocks.0.mlp.c_fc.weight": (2 * width) ** -0.5,
        "cross_modal_transformer.resblocks.2.mlp.c_proj.weight": width**-0.5 * (2 * layers) ** -0.5,
        "mlm_head.dense.weight": (2 * width) ** -0.5,
        "mlm_head.fc.weight": width**-0.5 * (2 * layers) ** -0.5,
        "classifier.weight": 0.001,
    }
    params = dict(model.named_parameters())
    for name, std in expected.items():
        assert abs(params[name].std().item() / std - 1) < 0.05, (name, params[name].std().item(), std)
    assert params["classifier.bias"].abs().sum() == 0


def test_shared_masked_caption_one_text_pass_equals_two_passes():
    """data.share_masked_caption: the reference encodes the masked caption twice (global losses
    and IRR); one pass serving both gives the same loss values and gradients."""
    torch.manual_seed(0)
    cfg = _config()
    shared = build_model(cfg, num_classes=4)
    cfg_two = _config()
    cfg_two.data.share_masked_caption = False
    two_pass = build_model(cfg_two, num_classes=4)
    two_pass.load_state_dict(shared.state_dict())
    batch = tiny_batch()
    batch["caption_ids"] = batch["mlm_ids"].clone()  # what the reference's in-place masking hands over
    calls = []
    shared.base_model.token_embedding.register_forward_hook(lambda *args: calls.append(args[1][0].shape[0]))
    results = []
    for model in (shared, two_pass):
        terms, _ = build_criterion(cfg)(model(batch), batch)
        sum(terms.values()).backward()
        results.append((terms, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    assert calls == [6]  # one text pass of the batch, not two
    (terms_a, grads_a), (terms_b, grads_b) = results
    for name in terms_a:
        torch.testing.assert_close(terms_a[name], terms_b[name], rtol=1e-5, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:  # the project's float32 criterion: max |difference| / max |gradient|
        assert_rel_close(grads_a[name], grads_b[name], rtol=1e-5)


def test_paper_model_sized_by_captions_has_the_authors_224m_parameters():
    """model.id_classes=captions on CUHK-PEDES (68,126 training captions): the authors' log
    reports 224M parameters; with 11,003 identities the model has 194.5M."""
    cfg = Config(model=dataclasses.replace(Config().model, pretrain="none"))
    with torch.device("meta"):  # sizes only, no memory
        by_captions = build_model(cfg, num_classes=68126)
        by_identities = build_model(cfg, num_classes=11003)
    count = lambda model: sum(p.numel() for p in model.parameters())  # noqa: E731
    assert round(count(by_captions) / 1e6, 1) == 223.8
    assert round(count(by_identities) / 1e6, 1) == 194.5
