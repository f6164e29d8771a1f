"""Precision modes: fp32, amp_bf16, amp_fp16 (fp32 weights + loss scaling) and pure_fp16
(the authors' set-up: half weights, fp16 autocast, no loss scaling, Adam on fp16 params)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch
from open_clip.model import convert_weights_to_lp

AUTOCAST_DTYPES = {"fp32": None, "amp_bf16": torch.bfloat16, "amp_fp16": torch.float16, "pure_fp16": torch.float16}


@dataclass
class Precision:
    """``mode``: one of ``configs.validation.PRECISIONS`` (``train.precision``, validated at load)."""

    mode: str
    device: torch.device

    def __post_init__(self):
        if self.mode not in AUTOCAST_DTYPES:  # a public entry: the mode may come from Python, unvalidated
            raise ValueError(f"train.precision={self.mode!r}; expected one of {', '.join(AUTOCAST_DTYPES)}")

    @property
    def autocast_dtype(self) -> Optional[torch.dtype]:
        return AUTOCAST_DTYPES[self.mode]

    def inference_autocast(self) -> ContextManager:
        """Evaluation of a model trained in this mode, outside the training run: a pure_fp16
        run under fp16 autocast (its weights are loaded in float32); no fp16 autocast on a
        CPU, where it is slow and no closer to the GPU's numbers."""
        if self.device.type == "cpu" and self.autocast_dtype == torch.float16:
            return contextlib.nullcontext()
        return self.autocast()

    def autocast(self) -> ContextManager:
        dtype = self.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """pure_fp16: cast Linear/Conv/attention weights and the CLIP projections to half
        (LayerNorms stay float32), as the reference's convert_weights; other modes: as is."""
        if self.mode == "pure_fp16":
            convert_weights_to_lp(model, torch.float16)
        return model

    def make_scaler(self) -> Optional[torch.amp.GradScaler]:
        """Loss scaling only for amp_fp16 (fp32 master weights); the reference uses none."""
        return torch.amp.GradScaler(self.device.type) if self.mode == "amp_fp16" else None
