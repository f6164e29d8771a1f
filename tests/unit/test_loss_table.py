"""The losses' table (``configs.defaults.LOSS_SPECS``): what each enabled loss set makes the
model and the batches carry, and a settings section the criterion lacks is an error, never a
default."""

from __future__ import annotations

import pytest
import torch

from configs.defaults import AsdmConfig, heads_needed, masked_captions_needed
from model.loss import FMFALoss


def test_what_each_loss_set_needs():
    paper = ["a-sdm", "mlm", "id", "efa"]
    assert heads_needed(paper) == ("irr", "id_classifier") and masked_captions_needed(paper)
    assert heads_needed(["sdm", "itc", "cmpm", "efa"]) == () and not masked_captions_needed(["sdm", "efa"])


def test_a_settings_section_the_criterion_lacks_is_an_error_not_a_default():
    criterion = FMFALoss(["a-sdm", "efa"], {}, logit_scale=50.0, asdm=AsdmConfig())
    outputs = {
        "image_feats": torch.randn(4, 8),
        "text_feats": torch.randn(4, 8),
        "image_tokens": torch.randn(4, 3, 8),
        "text_tokens": torch.randn(4, 5, 8),
    }
    with pytest.raises(AttributeError, match="'efa'"):
        criterion(outputs, {"pids": torch.arange(4)})
