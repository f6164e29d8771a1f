"""Which caption feeds which loss, from the loader through the training forward.

``data.share_masked_caption=false``: the global losses (A-SDM, ID, EFA) see the clean caption and
MLM the masked one. ``true`` (the authors' in-place masking): every loss sees the masked caption.
The expected features come from the model's own inference encoders (``encode_text``,
``encode_text_tokens``) applied to captions tokenized here from the annotation text, so a swap
anywhere between the dataset and the forward's outputs changes them.
"""

from __future__ import annotations

import pytest
import torch
from data_fixtures import make_dataset

from benchmarks.presets import TINY_RUN_OVERRIDES
from configs.defaults import Config
from configs.loader import load_config
from datasets.build import build_train_loader, read_dataset
from datasets.tokenizer import tokenize
from model import objectives
from model.build import build_criterion, build_model

SAMPLES = 6
# Two forwards of the same captions in batches of different sizes: float32 rounding only.
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def caption_config(root, shared: bool) -> Config:
    """A tiny CLIP on fixture CUHK-PEDES, the recipe's losses (MLM included), no augmentation."""
    data = [f"data.root={root}", "data.dataset=CUHK-PEDES", "data.num_workers=0", "data.augment=false"]
    return load_config(None, [*TINY_RUN_OVERRIDES, *data, f"data.share_masked_caption={shared}", "train.seed=3"])


def training_batch(cfg: Config):
    """The first SAMPLES training items as the loader's dataset gives them (collated), and the
    clean captions of those items tokenized from the annotation text."""
    loader, num_classes = build_train_loader(cfg)
    dataset = loader.dataset
    items = [dataset[(0, index)] for index in range(SAMPLES)]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    source = read_dataset(cfg.data.root, cfg.data.dataset).train_pairs(cfg.data.train_split)
    clean = torch.stack([tokenize(source.captions[index], cfg.data.text_length) for index in range(SAMPLES)])
    return batch, clean.long(), num_classes


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("captions")
    make_dataset(root, "CUHK-PEDES")
    read_dataset.cache_clear()
    return root


@pytest.mark.parametrize("shared", [False, True])
def test_global_losses_see_the_clean_caption_unless_shared_and_mlm_the_masked_one(fixture_root, shared):
    cfg = caption_config(fixture_root, shared)
    batch, clean, num_classes = training_batch(cfg)
    masked = batch["mlm_ids"]
    assert not torch.equal(masked, clean), "no caption was masked: the check could not tell them apart"
    torch.manual_seed(0)
    model = build_model(cfg, num_classes)
    model.train()
    out = model(batch)
    global_caption = masked if shared else clean
    other_caption = clean if shared else masked
    expected_name = "masked" if shared else "clean"
    assert torch.equal(batch["caption_ids"], global_caption), (
        f"the dataset's caption_ids is not the {expected_name} caption"
    )
    with torch.no_grad():
        expected_feats = model.encode_text(global_caption)
        expected_tokens = model.encode_text_tokens(global_caption)
        other_feats = model.encode_text(other_caption)
        image_tokens = model.encode_image_tokens(batch["images"])
        mlm_x = model.cross_former(model.encode_text_tokens(masked), image_tokens)
    # the global features and tokens (A-SDM, ID, EFA) are those of the expected caption ...
    torch.testing.assert_close(out["text_feats"], expected_feats, **TOLERANCE)
    torch.testing.assert_close(out["text_tokens"], expected_tokens, **TOLERANCE)
    # ... and far from the other caption's (so the comparison above can fail)
    assert (out["text_feats"] - other_feats).abs().max() > 100 * TOLERANCE["atol"]
    # MLM scores the masked caption at its labelled positions, in both modes
    labelled = batch["mlm_labels"] > 0
    torch.testing.assert_close(out["mlm_scores"], model.mlm_head(mlm_x[labelled]), **TOLERANCE)
    torch.testing.assert_close(out["mlm_labels"], batch["mlm_labels"][labelled])
    # the criterion scores A-SDM on these features: the global loss of the expected caption
    criterion = build_criterion(cfg)
    terms, _ = criterion(out, batch)
    with torch.no_grad():
        asdm = objectives.sdm_loss(
            model.encode_image(batch["images"]),
            expected_feats,
            batch["pids"],
            criterion.logit_scale,
            adaptive=True,
            adaptive_factor=criterion.asdm.factor,
            adaptive_mode=criterion.asdm.mode,
        )
    torch.testing.assert_close(terms["a-sdm"].detach(), criterion.weight("a-sdm") * asdm, **TOLERANCE)
