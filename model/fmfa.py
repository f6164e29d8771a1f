"""The FMFA model: a CLIP backbone and the heads its losses need; it encodes and predicts.
Which heads, of which sizes, a config or a state dict asks for: :func:`head_arguments`,
:func:`head_arguments_in`.

The losses live beside it (:mod:`model.objectives`, composed by :mod:`model.loss`):
``criterion(model(batch), batch)``. A new loss's head goes here (docs/training.md, "Adding a loss").

Attribute names (``base_model``, ``classifier``, ``cross_attn``,
``cross_modal_transformer``, ``ln_pre_t``, ``ln_pre_i``, ``ln_post``, ``mlm_head``)
are the reference's, so its checkpoints (and the Re-ID pre-trained ones built on it)
load without renaming.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Tuple

import torch
import torch.nn as nn
from open_clip.transformer import LayerNorm, QuickGELU, Transformer

from configs.defaults import VOCAB_SIZE, Config, heads_needed
from configs.errors import UserError

from .clip import encode_image_tokens, encode_text_tokens

Tensors = Dict[str, torch.Tensor]


def _init_irr(cross_attn: nn.MultiheadAttention, blocks: Transformer, mlm_head: nn.Sequential) -> None:
    """The reference's initialisation of the IRR cross-attention, transformer and MLM head."""
    width, layers = blocks.width, blocks.layers
    attn_std = width**-0.5
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
    """CLIP dual encoder + the FMFA training heads.

    Args:
        base_model: open_clip CLIP built by ``model.clip.build_clip``.
        embed_dim: its joint embedding width.
        num_classes: outputs of the ID classifier (0 = no ID head).
        cmt_depth: layers of the IRR cross-modal transformer (0 = no IRR/MLM head).
        vocab_size: MLM classes.
        share_masked_caption: the batch's caption is already the masked one (the authors'
            data code): the text tower runs once and its tokens feed the IRR branch too.
    """

    def __init__(
        self,
        base_model: nn.Module,
        embed_dim: int,
        num_classes: int = 0,
        cmt_depth: int = 0,
        vocab_size: int = VOCAB_SIZE,
        share_masked_caption: bool = False,
    ):
        super().__init__()
        self.base_model = base_model
        self.embed_dim = embed_dim
        self.num_classes, self.cmt_depth, self.vocab_size = num_classes, cmt_depth, vocab_size
        self.share_masked_caption = share_masked_caption
        if num_classes:
            self.classifier = nn.Linear(embed_dim, num_classes)
            nn.init.normal_(self.classifier.weight, std=0.001)
            nn.init.zeros_(self.classifier.bias)
        if cmt_depth:
            heads = embed_dim // 64
            self.cross_attn = nn.MultiheadAttention(embed_dim, heads, batch_first=True)
            self.cross_modal_transformer = Transformer(embed_dim, cmt_depth, heads, act_layer=QuickGELU)
            self.ln_pre_t, self.ln_pre_i, self.ln_post = (LayerNorm(embed_dim) for _ in range(3))
            self.mlm_head = nn.Sequential(
                OrderedDict(
                    [
                        ("dense", nn.Linear(embed_dim, embed_dim)),
                        ("gelu", QuickGELU()),
                        ("ln", LayerNorm(embed_dim)),
                        ("fc", nn.Linear(embed_dim, vocab_size)),
                    ]
                )
            )
            _init_irr(self.cross_attn, self.cross_modal_transformer, self.mlm_head)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Activation checkpointing of every transformer block: both CLIP towers (open_clip's
        ``CLIP.set_grad_checkpointing``: the vision and text transformers) and the IRR
        cross-modal transformer. open_clip 3.x checkpoints each block with
        ``torch.utils.checkpoint(..., use_reentrant=False)``; values and gradients are unchanged."""
        self.base_model.set_grad_checkpointing(enable)
        if self.cmt_depth:
            self.cross_modal_transformer.grad_checkpointing = enable

    def checkpointed_transformers(self) -> Dict[str, bool]:
        """``grad_checkpointing`` of each transformer, by attribute path."""
        towers = {
            "base_model.visual.transformer": self.base_model.visual.transformer,
            "base_model.transformer": self.base_model.transformer,
        }
        if self.cmt_depth:
            towers["cross_modal_transformer"] = self.cross_modal_transformer
        return {name: bool(module.grad_checkpointing) for name, module in towers.items()}

    # ---- inference -------------------------------------------------------------------
    @property
    def image_size(self) -> Tuple[int, int]:
        """(H, W) the image encoder takes."""
        height, width = self.base_model.visual.image_size
        return int(height), int(width)

    @property
    def text_length(self) -> int:
        """Token ids per caption the text encoder takes (its position embeddings)."""
        return int(self.base_model.context_length)

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
        return at_eot(self.encode_text_tokens(ids), ids).float()

    # ---- training --------------------------------------------------------------------
    def cross_former(self, text_tokens: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        """IRR: masked-caption tokens attend to image tokens, then the cross-modal transformer."""
        image_tokens = self.ln_pre_i(image_tokens)
        x = self.cross_attn(self.ln_pre_t(text_tokens), image_tokens, image_tokens, need_weights=False)[0]
        return self.ln_post(self.cross_modal_transformer(x))

    def forward(self, batch: Tensors) -> Tensors:
        """Encode a training batch once and predict with every head the model has.

        ``batch``: ``images`` [B, 3, H, W], ``caption_ids`` [B, L]; with the IRR head also
        ``mlm_labels`` [B, L] (0 = not a target) and, unless the caption is shared,
        ``mlm_ids`` [B, L]. Returns ``image_tokens`` [B, 1 + P, D], ``text_tokens``
        [B, L, D], ``image_feats`` / ``text_feats`` [B, D] (class token / EOT token); with
        the ID head ``image_logits`` / ``text_logits`` [B, C]; with the IRR head
        ``mlm_scores`` [N, vocab] and ``mlm_labels`` [N] of the N labelled positions. The
        network runs under the caller's autocast; :mod:`model.loss` scores in float32.
        """
        ids = batch["caption_ids"]
        image_tokens = self.encode_image_tokens(batch["images"])
        with_mlm = self.cmt_depth > 0 and "mlm_labels" in batch
        if with_mlm and not self.share_masked_caption:
            # Captions and masked captions share one pass through the text tower.
            both = self.encode_text_tokens(torch.cat([ids, batch["mlm_ids"]]))
            text_tokens, mlm_tokens = both[: ids.shape[0]], both[ids.shape[0] :]
        else:
            text_tokens = mlm_tokens = self.encode_text_tokens(ids)
        out = {
            "image_tokens": image_tokens,
            "text_tokens": text_tokens,
            "image_feats": image_tokens[:, 0],
            "text_feats": at_eot(text_tokens, ids),
        }
        if self.num_classes:
            out["image_logits"], out["text_logits"] = (
                self.id_logits(out["image_feats"]),
                self.id_logits(out["text_feats"]),
            )
        if with_mlm:
            out["mlm_scores"], out["mlm_labels"] = self.mlm_scores(mlm_tokens, image_tokens, batch["mlm_labels"])
        return out

    def mlm_scores(
        self, mlm_tokens: torch.Tensor, image_tokens: torch.Tensor, labels: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """MLM logits [N, vocab] (the head's dtype) and labels [N] of the N labelled positions.

        Only labelled positions reach the vocabulary classifier: the loss ignores the
        others (label 0), so value and gradients equal those of scoring every position,
        without the [B * L, 49408] logits.
        """
        x = self.cross_former(mlm_tokens, image_tokens)
        labels = labels.reshape(-1)
        targets = labels > 0
        return self.mlm_head(x.reshape(-1, x.shape[-1])[targets]), labels[targets]

    def id_logits(self, feats: torch.Tensor) -> torch.Tensor:
        """ID classifier logits [B, C] outside autocast: the classifier runs in its own dtype
        (half under pure fp16, as in the reference; float32 otherwise)."""
        with torch.autocast(feats.device.type, enabled=False):
            return self.classifier(feats.to(self.classifier.weight.dtype))


def head_arguments(cfg: Config, num_classes: int) -> Dict[str, int]:
    """:class:`FMFA`'s head arguments for the heads the enabled losses need
    (``configs.defaults.LOSS_SPECS``): the ID classifier with ``num_classes`` outputs, IRR
    with ``cfg.model.cmt_depth`` layers; 0 = no such head. UserError when the ID classifier is
    needed and ``num_classes`` (an argument, not a config value) is below 1."""
    heads = heads_needed(cfg.loss.names)
    if "id_classifier" in heads and num_classes < 1:
        raise UserError(f"loss.names={'+'.join(cfg.loss.names)} needs the ID classifier: num_classes > 0")
    return {
        "num_classes": num_classes if "id_classifier" in heads else 0,
        "cmt_depth": cfg.model.cmt_depth if "irr" in heads else 0,
    }


def head_arguments_in(state_dict: Tensors) -> Dict[str, int]:
    """:class:`FMFA`'s head arguments for the heads present in an FMFA state dict (with the
    MLM head's vocabulary where there is one)."""
    depth = len({k.split(".")[2] for k in state_dict if k.startswith("cross_modal_transformer.resblocks.")})
    heads = {
        "num_classes": state_dict["classifier.weight"].shape[0] if "classifier.weight" in state_dict else 0,
        "cmt_depth": depth,
    }
    if depth:
        heads["vocab_size"] = state_dict["mlm_head.fc.weight"].shape[0]
    return heads


def at_eot(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The token at each caption's EOT (the largest id): [B, L, D] -> [B, D]."""
    return tokens[torch.arange(tokens.shape[0], device=tokens.device), ids.argmax(dim=-1)]
