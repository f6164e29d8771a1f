"""Export the two encoders to ONNX, verified against PyTorch before anything is written.

Each encoder is wrapped so that the graph ends with the L2 normalisation (output
``embeddings`` [N, D]); the batch size N is dynamic, the image size and the context length
are the model's. The graphs are made by ``torch.onnx.export`` (the torch.export-based
exporter, opset :data:`OPSET`) in float32. Verification runs onnxruntime (CPU) and PyTorch on
the same evaluation images and captions: every embedding must agree to :data:`TOLERANCE`
and every query must get the same top 10 (order included; images whose scores tie within
:data:`TIE_TOLERANCE` may swap, and are counted); otherwise :class:`ExportError` and no file
is written.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional, Sequence, Tuple

import onnxruntime
import torch
import torch.nn as nn
import torch.nn.functional as F

from configs.errors import UserError
from datasets.tokenizer import tokenize_batch
from model.fmfa import FMFA
from serving.onnx_model import IMAGE_INPUT, OUTPUT, TEXT_INPUT, folder_spec, make_session, run_session, write_folder
from serving.onnx_tokenizer import build_hf_tokenizer, tokenizer_mismatches

logger = logging.getLogger(__name__)

OPSET = 18
TOLERANCE = 1e-4  # largest |onnxruntime - PyTorch| allowed in any L2-normalised embedding (fp32)
TOP_K = 10
TIE_TOLERANCE = 1e-5  # cosine scores this close are a tie: either order is the same top 10


class ExportError(UserError):
    """The model cannot be exported faithfully (or not to the folder given); nothing was written."""


class ImageEmbedder(nn.Module):
    """images [N, 3, H, W] -> L2-normalised global image embeddings [N, D]."""

    def __init__(self, model: FMFA):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_image(images), dim=-1)


class TextEmbedder(nn.Module):
    """text_ids [N, L] -> L2-normalised global text embeddings [N, D] (token at argmax id = EOT)."""

    def __init__(self, model: FMFA):
        super().__init__()
        self.model = model

    def forward(self, text_ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.model.encode_text(text_ids), dim=-1)


def context_length(model: FMFA) -> int:
    """Token ids per caption the text tower takes (its position embeddings)."""
    return int(model.base_model.positional_embedding.shape[0])


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's graph passes log every step at INFO; keep their warnings only."""
    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir")]
    levels = [one.level for one in loggers]
    for one in loggers:
        one.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for one, level in zip(loggers, levels):
            one.setLevel(level)


def export_graph(module: nn.Module, example: torch.Tensor, input_name: str) -> bytes:
    """``module`` as a serialised ONNX model: input ``input_name`` with a dynamic first
    dimension ``N``, output ``embeddings``."""
    with _quiet_exporter():
        program = torch.onnx.export(
            module.eval(),
            (example,),
            input_names=[input_name],
            output_names=[OUTPUT],
            dynamic_shapes={input_name: {0: torch.export.Dim("N", min=1)}},
            opset_version=OPSET,
            dynamo=True,
            verbose=False,
        )
    return program.model_proto.SerializeToString()


def export_encoders(model: FMFA, image_size: Sequence[int]) -> Tuple[bytes, bytes]:
    """(image.onnx, text.onnx) of ``model`` (float32, CPU), traced on two example items."""
    model = model.float().cpu().eval()
    images = torch.randn(2, 3, int(image_size[0]), int(image_size[1]), generator=torch.Generator().manual_seed(0))
    ids = tokenize_batch(["a woman in a red coat", "a man with a black backpack"], context_length(model))
    return export_graph(ImageEmbedder(model), images, IMAGE_INPUT), export_graph(TextEmbedder(model), ids, TEXT_INPUT)


@dataclass
class Verification:
    """What the export was checked on, and how closely the two engines agreed."""

    images: int
    captions: int
    image_max_abs_diff: float
    text_max_abs_diff: float
    tolerance: float
    top_k: int
    top_k_identical: int  # queries whose top k is the same list, in the same order
    top_k_near_ties: int  # queries whose lists differ only by swapping images that tie within tie_tolerance
    tie_tolerance: float = TIE_TOLERANCE

    def summary(self) -> str:
        return (
            f"{self.images} images, {self.captions} captions: max |onnxruntime - PyTorch| "
            f"{self.image_max_abs_diff:.2e} (images), {self.text_max_abs_diff:.2e} (captions), "
            f"tolerance {self.tolerance:.0e}; top-{self.top_k} identical for {self.top_k_identical}/"
            f"{self.captions} queries ({self.top_k_near_ties} more differ only among scores tied within "
            f"{self.tie_tolerance:.0e})"
        )


def _batches(loader: Iterable, limit: Optional[int]) -> Iterable[torch.Tensor]:
    """The inputs of ``loader``'s (pid, input) batches, cut after ``limit`` items."""
    seen = 0
    for _, inputs in loader:
        if limit is not None and seen >= limit:
            return
        inputs = inputs if limit is None else inputs[: limit - seen]
        seen += len(inputs)
        yield inputs


@torch.no_grad()
def _both(
    module: nn.Module, session: onnxruntime.InferenceSession, name: str, batches: Iterable[torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor]:
    torch_out, onnx_out = [], []
    for inputs in batches:
        torch_out.append(module(inputs).float())
        onnx_out.append(run_session(session, name, inputs))
    if not torch_out:
        raise ExportError(f"the verification set has no {'images' if name == IMAGE_INPUT else 'captions'}")
    return torch.cat(torch_out), torch.cat(onnx_out)


def compare_top_k(reference: torch.Tensor, other: torch.Tensor, k: int) -> Tuple[int, int, int]:
    """(identical, near ties, mismatched) rows of two [Q, G] score matrices: a row's top-k lists
    are identical, or differ only by images whose reference scores tie (within
    :data:`TIE_TOLERANCE`: the list of ``other`` has, rank by rank, the reference's best scores),
    or differ otherwise."""
    k = min(k, reference.shape[1])
    best = reference.topk(k, dim=1)
    theirs = other.topk(k, dim=1).indices
    identical = (best.indices == theirs).all(dim=1)
    tied = (reference.gather(1, theirs) - best.values).abs().amax(dim=1) <= TIE_TOLERANCE
    return int(identical.sum()), int((~identical & tied).sum()), int((~identical & ~tied).sum())


def verify(
    model: FMFA, image_onnx: bytes, text_onnx: bytes, images: Iterable, texts: Iterable, limit: Optional[int] = None
) -> Verification:
    """Run both engines on the (pid, images) and (pid, token ids) batches of ``images`` and
    ``texts`` (at most ``limit`` of each) and compare; :class:`ExportError` if they differ."""
    model = model.float().cpu().eval()
    image_torch, image_onnx_out = _both(
        ImageEmbedder(model), make_session(image_onnx), IMAGE_INPUT, _batches(images, limit)
    )
    text_torch, text_onnx_out = _both(
        TextEmbedder(model), make_session(text_onnx), TEXT_INPUT, (ids.long() for ids in _batches(texts, limit))
    )
    image_diff = float((image_torch - image_onnx_out).abs().max())
    text_diff = float((text_torch - text_onnx_out).abs().max())
    same, ties, wrong = compare_top_k(text_torch @ image_torch.t(), text_onnx_out @ image_onnx_out.t(), TOP_K)
    result = Verification(
        len(image_torch), len(text_torch), image_diff, text_diff, TOLERANCE, min(TOP_K, len(image_torch)), same, ties
    )
    if image_diff > TOLERANCE or text_diff > TOLERANCE or wrong:
        raise ExportError(
            f"onnxruntime does not reproduce PyTorch, nothing written: {result.summary()}; "
            f"{wrong} queries get another top-{result.top_k}"
        )
    return result


def check_output(output: Path) -> None:
    """--output must be a folder (new or existing), not a file."""
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output} is a file; expected a folder for image.onnx, text.onnx and model.json")


def export_folder(
    model: FMFA,
    image_size: Sequence[int],
    images: Iterable,
    texts: Iterable,
    captions: Sequence[str],
    output: Path,
    source: str,
    limit: Optional[int] = None,
) -> Tuple[Verification, Dict[str, int]]:
    """Export, verify on the evaluation batches, then write ``output``; (verification, file sizes)."""
    check_output(output)
    length = context_length(model)
    image_onnx, text_onnx = export_encoders(model, image_size)
    logger.info(
        "exported: image.onnx %.1f MB, text.onnx %.1f MB; verifying on onnxruntime",
        len(image_onnx) / 1e6,
        len(text_onnx) / 1e6,
    )
    check = verify(model, image_onnx, text_onnx, images, texts, limit)
    logger.info("verified: %s", check.summary())
    tokenizer_json = build_hf_tokenizer(length).to_str()
    checked = list(itertools.islice(captions, limit))
    different = tokenizer_mismatches(tokenizer_json, checked, length)
    if different:
        logger.warning(
            "tokenizer.json gives other ids than the project's tokenizer for %d of %d captions, e.g. %r",
            len(different),
            len(checked),
            different[0][:80],
        )
    verification = {
        **asdict(check),
        "engine": f"onnxruntime {onnxruntime.__version__} CPU",
        "reference": f"PyTorch {torch.__version__} fp32 CPU",
        "tokenizer_captions_checked": len(checked),
        "tokenizer_captions_different": len(different),
    }
    spec = folder_spec(image_size, length, model.embed_dim, OPSET, source, verification)
    return check, write_folder(output, image_onnx, text_onnx, tokenizer_json, spec)
