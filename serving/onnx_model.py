"""The export folder (``export_onnx.py``): its format, written and read, and its encoders on onnxruntime.

The folder holds ``image.onnx`` (input ``images`` float32 [N, 3, H, W], resized and
normalised), ``text.onnx`` (input ``text_ids`` int64 [N, L]), both with output
``embeddings`` float32 [N, D] (L2-normalised), ``tokenizer.json`` and ``model.json``
(what is needed to use them: preprocessing, tokenizer settings, D, the verification).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import onnxruntime as ort
import torch

from configs.errors import UserError
from datasets.tokenizer import EOT_ID, MASK_ID, SOT_ID, VOCAB_SIZE
from datasets.transforms import CLIP_MEAN, CLIP_STD
from serving.onnx_tokenizer import PAD_ID
from utils.io import atomic_write, write_text_atomic

FORMAT = "fmfa-onnx-encoders"
FORMAT_VERSION = 1
IMAGE_FILE, TEXT_FILE, TOKENIZER_FILE, SPEC_FILE = "image.onnx", "text.onnx", "tokenizer.json", "model.json"
IMAGE_INPUT, TEXT_INPUT, OUTPUT = "images", "text_ids", "embeddings"


class OnnxFolderError(UserError):
    """An export folder is missing, incomplete or unreadable; the message names the file."""


def make_session(model: bytes | Path, threads: Optional[int] = None, spin: bool = False) -> ort.InferenceSession:
    """A CPU onnxruntime session of an ONNX file or serialised model (``threads``: intra-op
    threads, default onnxruntime's choice). Unless ``spin``, idle worker threads sleep at once
    instead of busy-waiting for the next call, which takes the CPU from the work in between
    (decoding images, PyTorch calls, which a spinning onnxruntime thread slows many times over)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: no warnings about unused initialisers
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def run_session(session: ort.InferenceSession, name: str, inputs: torch.Tensor | np.ndarray) -> torch.Tensor:
    """``embeddings`` of one input batch, as a float32 CPU tensor."""
    array = inputs.numpy() if isinstance(inputs, torch.Tensor) else inputs
    return torch.from_numpy(session.run([OUTPUT], {name: np.ascontiguousarray(array)})[0])


def folder_spec(
    image_size: Sequence[int], context_length: int, embed_dim: int, opset: int, source: str, verification: Dict
) -> Dict[str, Any]:
    """model.json: everything needed to use the two graphs without this repository."""
    height, width, length, dim = int(image_size[0]), int(image_size[1]), int(context_length), int(embed_dim)
    image = {
        "file": IMAGE_FILE,
        "input": IMAGE_INPUT,
        "input_shape": ["N", 3, height, width],
        "input_dtype": "float32",
        "size": [height, width],
        "color": "RGB",
        "layout": "NCHW",
        "resize": "bilinear",
        "resize_detail": "PIL.Image.resize((width, height), Image.BILINEAR) of the whole image: no crop, "
        "aspect ratio not kept (torchvision Resize on PIL)",
        "scale": 1 / 255,
        "mean": list(CLIP_MEAN),
        "std": list(CLIP_STD),
        "normalise": "(pixel * scale - mean) / std per channel",
    }
    text = {
        "file": TEXT_FILE,
        "input": TEXT_INPUT,
        "input_shape": ["N", length],
        "input_dtype": "int64",
        "context_length": length,
        "tokenizer": TOKENIZER_FILE,
        "tokenizer_library": "tokenizers (Hugging Face)",
        "vocab_size": VOCAB_SIZE,
        "mask_id": MASK_ID,
        "sot_id": SOT_ID,
        "eot_id": EOT_ID,
        "pad_id": PAD_ID,
        "layout": "[SOT] + BPE + [EOT], cut to context_length with EOT last, zero-padded",
        "cleaning": "html.unescape(html.unescape(ftfy.fix_text(caption))) before tokenizer.json, which does "
        "the rest (NFC, whitespace, lower case, BPE, SOT/EOT, truncation, padding)",
        "global_token": "the EOT position (argmax of the ids), inside the graph",
    }
    output = {
        "name": OUTPUT,
        "shape": ["N", dim],
        "dtype": "float32",
        "l2_normalised": True,
        "similarity": "dot product of an image and a text embedding = cosine similarity",
    }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "embed_dim": dim,
        "opset": opset,
        "source": source,
        "image": image,
        "text": text,
        "output": output,
        "verification": verification,
    }


def write_folder(
    output: Path, image_onnx: bytes, text_onnx: bytes, tokenizer_json: str, spec: Dict[str, Any]
) -> Dict[str, int]:
    """The four files, each written atomically, model.json last (with each file's size and
    SHA-256); returns the size of each file in bytes."""
    output.mkdir(parents=True, exist_ok=True)
    blobs = {IMAGE_FILE: image_onnx, TEXT_FILE: text_onnx, TOKENIZER_FILE: tokenizer_json.encode("utf-8")}
    for name, data in blobs.items():
        with atomic_write(output / name) as stream:
            stream.write(data)
    files = {name: {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} for name, data in blobs.items()}
    text = json.dumps({**spec, "files": files}, indent=2) + "\n"
    write_text_atomic(output / SPEC_FILE, text)
    for name in [*blobs, SPEC_FILE]:  # files to deploy: readable by others, like any exported artefact
        os.chmod(output / name, 0o644)
    return {**{name: len(data) for name, data in blobs.items()}, SPEC_FILE: len(text.encode("utf-8"))}


def read_spec(folder: Path) -> Dict[str, Any]:
    """``folder/model.json``, checked: a clear error naming the file when it is not an export."""
    path = Path(folder) / SPEC_FILE
    if not Path(folder).is_dir():
        raise OnnxFolderError(f"ONNX export folder not found: {folder} (make one with export_onnx.py)")
    if not path.is_file():
        raise OnnxFolderError(f"{path} not found: {folder} is not an export_onnx.py folder")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OnnxFolderError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(spec, dict) or spec.get("format") != FORMAT:
        raise OnnxFolderError(f'{path}: expected "format": "{FORMAT}" (a model.json written by export_onnx.py)')
    if spec.get("format_version") != FORMAT_VERSION:
        raise OnnxFolderError(
            f"{path}: format_version {spec.get('format_version')!r}, this program reads "
            f"{FORMAT_VERSION}; export the model again"
        )
    try:
        size, length = spec["image"]["size"], spec["text"]["context_length"]
        valid = len(size) == 2 and all(isinstance(v, int) and v > 0 for v in [*size, length])
    except (KeyError, TypeError):
        valid = False
    if not valid:
        raise OnnxFolderError(f"{path}: expected image.size [H, W] and text.context_length, positive integers")
    return spec


class OnnxEncoders:
    """The two exported encoders on onnxruntime, with the interface search.py and the gallery
    use (:class:`serving.inference.Encoders`); embeddings come back as CPU tensors."""

    def __init__(self, folder: Path, threads: Optional[int] = None):
        self.folder = Path(folder)
        self.spec = read_spec(self.folder)
        self.weights = self.folder / IMAGE_FILE  # keys the gallery's embedding cache
        self.image_session = self._session(IMAGE_FILE, threads)
        self.text_session = self._session(TEXT_FILE, threads)

    def _session(self, name: str, threads: Optional[int]) -> ort.InferenceSession:
        path = self.folder / name
        if not path.is_file():
            raise OnnxFolderError(f"{path} not found: the export in {self.folder} is incomplete")
        try:
            return make_session(path, threads)
        except Exception as error:  # onnxruntime raises its own types for any unreadable model
            raise OnnxFolderError(f"{path} cannot be loaded by onnxruntime: {str(error).splitlines()[0]}") from None

    @property
    def image_size(self) -> Tuple[int, int]:
        height, width = self.spec["image"]["size"]
        return int(height), int(width)

    @property
    def text_length(self) -> int:
        return int(self.spec["text"]["context_length"])

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] preprocessed images -> [N, D] L2-normalised float32 embeddings."""
        return run_session(self.image_session, IMAGE_INPUT, images.float())

    def embed_texts(self, ids: torch.Tensor) -> torch.Tensor:
        """[N, L] token ids -> [N, D] L2-normalised float32 embeddings."""
        return run_session(self.text_session, TEXT_INPUT, ids.long())
