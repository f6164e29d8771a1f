"""The FMFA model: a CLIP backbone, the heads its losses need, and one training forward.

Attribute names (``base_model``, ``classifier``, ``cross_attn``,
``cross_modal_transformer``, ``ln_pre_t``, ``ln_pre_i``, ``ln_post``, ``mlm_head``)
are the reference's, so its checkpoints (and the Re-ID pre-trained ones built on it)
load without renaming.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn as nn
from open_clip.transformer import LayerNorm, QuickGELU, Transformer

from configs.defaults import AsdmConfig, EfaConfig
from . import objectives
from .clip import encode_image_tokens, encode_text_tokens

LOSS_NAMES = ("itc", "sdm", "a-sdm", "cmpm", "id", "mlm", "efa")
Tensors = Dict[str, torch.Tensor]


def parse_loss_names(spec: str) -> List[str]:
    """'a-sdm+mlm+id+efa' -> ['a-sdm', 'mlm', 'id', 'efa']; unknown or repeated names are errors."""
    names = [name.strip() for name in spec.split("+") if name.strip()]
    unknown = [name for name in names if name not in LOSS_NAMES]
    if unknown or not names:
        raise ValueError(f"loss.names={spec!r}: unknown loss {unknown or '(empty)'}; "
                         f"allowed: {', '.join(LOSS_NAMES)} joined by '+'")
    if len(set(names)) != len(names):
        raise ValueError(f"loss.names={spec!r} names a loss twice")
    return names


def _init_irr(cross_attn: nn.MultiheadAttention, blocks: Transformer, mlm_head: nn.Sequential) -> None:
    """The reference's initialisation of the IRR cross-attention, transformer and MLM head."""
    width, layers = blocks.width, blocks.layers
    attn_std = width ** -0.5
    proj_std = attn_std * (2 * layers) ** -0.5
    fc_std = (2 * width) ** -0.5
    for attn in [cross_attn] + [block.attn for block in blocks.resblocks]:
        nn.init.normal_(attn.in_proj_weight, std=attn_std)
        nn.init.normal_(attn.out_proj.weight, std=proj_std)
    for block in blocks.resblocks:
        nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
        nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
    nn.init.normal_(mlm_head.dense.weight, std=fc_std)
    nn.init.normal_(mlm_head.fc.weight, std=proj_std)


class FMFA(nn.Module):
    """CLIP dual encoder + FMFA training heads.

    Args:
        base_model: open_clip CLIP built by ``model.clip.build_clip``.
        embed_dim: its joint embedding width.
        loss_names: enabled losses (see LOSS_NAMES); heads exist only for those that need them.
        loss_weights: weight per loss name (missing = 1).
        num_classes: training identities for the ID head (needed with 'id').
        cmt_depth: layers of the IRR cross-modal transformer (needed with 'mlm').
        vocab_size: MLM classes.
        temperature: fixed softmax temperature of the global losses (logit scale 1/T).
    """

    def __init__(self, base_model: nn.Module, embed_dim: int, loss_names: List[str],
                 loss_weights: Dict[str, float] | None = None, num_classes: int = 0, cmt_depth: int = 0,
                 vocab_size: int = 49408, temperature: float = 0.02,
                 asdm: AsdmConfig | None = None, efa: EfaConfig | None = None):
        super().__init__()
        self.base_model = base_model
        self.embed_dim = embed_dim
        self.loss_names = list(loss_names)
        self.loss_weights = {name: float((loss_weights or {}).get(name, 1.0)) for name in self.loss_names}
        self.logit_scale = 1.0 / temperature
        self.asdm, self.efa = asdm or AsdmConfig(), efa or EfaConfig()
        # Several GPUs with train.gather_features: a differentiable all-gather applied to the
        # global features and identities before SDM/ITC/CMPM (batch-wide losses see the
        # global batch; a deviation from the single-GPU reference). None = this rank only.
        self.feature_gather: Callable[[torch.Tensor], torch.Tensor] | None = None
        self.num_classes, self.cmt_depth, self.vocab_size = num_classes, cmt_depth, vocab_size
        if num_classes:
            self.classifier = nn.Linear(embed_dim, num_classes)
            nn.init.normal_(self.classifier.weight, std=0.001)
            nn.init.zeros_(self.classifier.bias)
        if cmt_depth:
            heads = embed_dim // 64
            self.cross_attn = nn.MultiheadAttention(embed_dim, heads, batch_first=True)
            self.cross_modal_transformer = Transformer(embed_dim, cmt_depth, heads, act_layer=QuickGELU)
            self.ln_pre_t, self.ln_pre_i, self.ln_post = (LayerNorm(embed_dim) for _ in range(3))
            self.mlm_head = nn.Sequential(OrderedDict([
                ("dense", nn.Linear(embed_dim, embed_dim)), ("gelu", QuickGELU()),
                ("ln", LayerNorm(embed_dim)), ("fc", nn.Linear(embed_dim, vocab_size))]))
            _init_irr(self.cross_attn, self.cross_modal_transformer, self.mlm_head)
        if "id" in self.loss_names and not num_classes:
            raise ValueError("loss 'id' needs num_classes > 0 (the number of training identities)")
        if "mlm" in self.loss_names and not cmt_depth:
            raise ValueError("loss 'mlm' needs model.cmt_depth > 0")

    # ---- inference -------------------------------------------------------------------
    def encode_image_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] -> [B, 1 + patches, embed_dim], class token first."""
        return encode_image_tokens(self.base_model, images)

    def encode_text_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """[B, L] token ids -> [B, L, embed_dim]."""
        return encode_text_tokens(self.base_model, ids)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Global image embeddings (class token), float32, not normalised: [B, embed_dim]."""
        return self.base_model.visual(images)[0].float()  # the projected class token only

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """Global text embeddings (token at EOT = argmax id), float32, not normalised."""
        return _at_eot(self.encode_text_tokens(ids), ids).float()

    # ---- training --------------------------------------------------------------------
    def cross_former(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """IRR: masked-caption tokens attend to image tokens, then the cross-modal transformer."""
        image_tokens = self.ln_pre_i(image_tokens)
        x = self.cross_attn(self.ln_pre_t(text_tokens), image_tokens, image_tokens, need_weights=False)[0]
        return self.ln_post(self.cross_modal_transformer(x))

    def forward(self, batch: Tensors) -> Tuple[Tensors, Tensors]:
        """Encode a batch once and compute every enabled loss.

        ``batch``: ``images`` [B, 3, H, W], ``caption_ids`` [B, L], ``pids`` [B]; with
        'mlm' also ``mlm_ids`` [B, L] and ``mlm_labels`` [B, L] (0 = not a target).
        Returns ``(losses, metrics)``: the weighted loss terms by loss name (their sum
        is the training loss) and detached accuracies for logging. The network runs
        under the caller's autocast; the losses always in float32.
        """
        ids = batch["caption_ids"]
        with_mlm = "mlm" in self.loss_names
        image_tokens = self.encode_image_tokens(batch["images"])
        # Captions and masked captions share one pass through the text tower.
        text_tokens = self.encode_text_tokens(torch.cat([ids, batch["mlm_ids"]]) if with_mlm else ids)
        text_tokens, mlm_tokens = text_tokens[:ids.shape[0]], text_tokens[ids.shape[0]:]
        mlm = self._mlm_scores(mlm_tokens, image_tokens, batch["mlm_labels"]) if with_mlm else None
        with torch.autocast(image_tokens.device.type, enabled=False):
            return self.loss_terms(batch["pids"], ids, image_tokens.float(), text_tokens.float(), mlm)

    def _mlm_scores(self, mlm_tokens: torch.Tensor, image_tokens: torch.Tensor,
                    labels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """MLM logits [N, vocab] (float32) and labels [N] of the N labelled positions.

        Only labelled positions reach the vocabulary classifier: the loss ignores the
        others (label 0), so value and gradients equal those of scoring every position,
        without the [B * L, 49408] logits.
        """
        x = self.cross_former(mlm_tokens, image_tokens)
        labels = labels.reshape(-1)
        targets = labels > 0
        return self.mlm_head(x.reshape(-1, x.shape[-1])[targets]).float(), labels[targets]

    def loss_terms(self, pids: torch.Tensor, ids: torch.Tensor, image_tokens: torch.Tensor,
                   text_tokens: torch.Tensor, mlm: Tuple[torch.Tensor, torch.Tensor] | None
                   ) -> Tuple[Tensors, Tensors]:
        """The one place that composes the enabled losses with their weights (float32 inputs)."""
        image_feats, text_feats = image_tokens[:, 0], _at_eot(text_tokens, ids)
        batch_feats = (image_feats, text_feats, pids)
        if self.feature_gather is not None:
            batch_feats = tuple(self.feature_gather(x) for x in batch_feats)
        terms: Tensors = {}
        metrics: Tensors = {}
        for name in self.loss_names:
            if name == "mlm":
                terms[name] = objectives.mlm_loss(*mlm)
                metrics["mlm_acc"] = _accuracy(*mlm)
            elif name == "id":
                image_logits, text_logits = self._id_logits(image_feats), self._id_logits(text_feats)
                terms[name] = objectives.id_loss(image_logits, text_logits, pids)
                metrics["img_acc"], metrics["txt_acc"] = _accuracy(image_logits, pids), _accuracy(text_logits, pids)
            elif name == "efa":
                terms[name] = objectives.efa_loss(
                    text_tokens, image_tokens, self.efa.text_margin, self.efa.image_margin,
                    self.efa.lse_lambda, self.efa.threshold, self.efa.block_elems)
            elif name == "itc":
                terms[name] = objectives.itc_loss(*batch_feats[:2], self.logit_scale)
            elif name == "cmpm":
                terms[name] = objectives.cmpm_loss(*batch_feats)
            else:  # sdm, a-sdm
                terms[name] = objectives.sdm_loss(
                    *batch_feats, self.logit_scale, adaptive=name == "a-sdm",
                    adaptive_factor=self.asdm.factor, adaptive_mode=self.asdm.mode)
        terms = {name: self.loss_weights[name] * value for name, value in terms.items()}
        return terms, {k: v.detach() for k, v in metrics.items()}

    def _id_logits(self, feats: torch.Tensor) -> torch.Tensor:
        # The classifier's own dtype (half under pure fp16, as in the reference), float32 out.
        return self.classifier(feats.to(self.classifier.weight.dtype)).float()


def _at_eot(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The token at each caption's EOT (the largest id): [B, L, D] -> [B, D]."""
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), ids.argmax(dim=-1)]


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return (logits.argmax(dim=1) == labels).float().mean()
