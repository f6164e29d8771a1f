"""Reading weight files safely and recognising their layout.

Every file goes through ``torch.load(weights_only=True)``: tensors and plain Python
containers only; a pickle that would run code is refused, never executed. A
``.safetensors`` file (the format the Hugging Face hub ships open_clip weights in,
``open_clip_model.safetensors``) is read by the safetensors library: tensors only by design.
TorchScript archives (OpenAI's CLIP release) are the one exception the caller routes
to ``torch.jit.load``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Any, Dict, List

import safetensors.torch
import torch

from configs.errors import UserError


class WeightsError(UserError, ValueError):
    """A weights file cannot be used: unreadable, refused (code-carrying pickle), of an
    unknown layout, or not fitting the model; the message names the file."""


class WeightsNotFoundError(UserError, FileNotFoundError):
    """A weights file is missing; the message names the path and the key that set it."""


FMFA_PREFIX = "base_model."
_DISTRIBUTED_PREFIX = "module."
LAYOUTS = (
    "an FMFA checkpoint ({'model': state_dict} with 'base_model.*' keys, this project's or the reference's)",
    "an OpenAI CLIP TorchScript archive (ViT-B-16.pt)",
    "an OpenAI-format CLIP state dict ('visual.conv1.weight', 'token_embedding.weight', ...)",
    "an open_clip checkpoint ({'state_dict': ...})",
    "a .safetensors file holding an FMFA or a CLIP state dict",
)


def load_weights_file(path: str) -> Any:
    """``torch.load(path, weights_only=True)`` (``.safetensors``: safetensors' loader) with
    errors that name the file."""
    if not os.path.isfile(path):
        raise WeightsNotFoundError(f"checkpoint not found: {path!r}")
    if str(path).endswith(".safetensors"):
        return _load_safetensors(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(
            f"{path}: refused to load; it is not a plain-weights checkpoint (loading it would "
            f"need to run code from the file, which is never done). Detail: {str(err).splitlines()[0]}"
        ) from None
    except Exception as err:  # torch raises many types for a file that is not a checkpoint
        raise WeightsError(
            f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else 'truncated or empty file'})"
        ) from None


def _load_safetensors(path: str) -> Dict[str, torch.Tensor]:
    try:
        return safetensors.torch.load_file(path, device="cpu")
    except Exception as err:  # SafetensorError, or OSError for an unreadable file
        raise WeightsError(
            f"{path}: not a readable safetensors file ({type(err).__name__}: {str(err).splitlines()[0] or 'empty'})"
        ) from None


def strip_prefix(state_dict: Dict[str, torch.Tensor], prefix: str = _DISTRIBUTED_PREFIX) -> Dict[str, torch.Tensor]:
    """Drop ``prefix`` from keys that carry it (DataParallel/DDP's ``module.``)."""
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}


def _is_state_dict(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def unwrap_state_dict(obj: Any, source: str) -> Dict[str, torch.Tensor]:
    """The tensor state dict inside a loaded checkpoint (``model`` / ``state_dict`` / bare)."""
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if _is_state_dict(obj.get(key)):
                return strip_prefix(obj[key])
    if _is_state_dict(obj):
        return strip_prefix(obj)
    top = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
    raise WeightsError(
        f"{source}: unknown checkpoint layout (top level: {top}). Expected one of: " + "; ".join(LAYOUTS)
    )


def is_fmfa_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(FMFA_PREFIX) for k in state_dict)


def is_clip_state_dict(state_dict: Dict[str, torch.Tensor]) -> bool:
    return "visual.conv1.weight" in state_dict and "token_embedding.weight" in state_dict


def state_dict_mismatches(expected: Dict[str, torch.Tensor], given: Dict[str, torch.Tensor]) -> List[str]:
    """What stops ``given`` from loading into a model whose state dict is ``expected``:
    missing keys, unexpected keys and shape mismatches, one line each (empty when it fits)."""
    lines = [f"missing {key} {list(expected[key].shape)}" for key in expected if key not in given]
    lines += [f"unexpected {key} {list(given[key].shape)}" for key in given if key not in expected]
    lines += [
        f"shape of {key}: checkpoint {list(given[key].shape)}, model {list(expected[key].shape)}"
        for key in expected
        if key in given and given[key].shape != expected[key].shape
    ]
    return lines


def load_matching_state_dict(
    model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str, hint: str = ""
) -> None:
    """``model.load_state_dict`` after checking keys and shapes; a mismatch raises one
    ValueError naming ``source`` and the mismatching keys (the first 12)."""
    lines = state_dict_mismatches(model.state_dict(), state_dict)
    if lines:
        shown = "\n  ".join(lines[:12]) + (f"\n  ... and {len(lines) - 12} more" if len(lines) > 12 else "")
        raise WeightsError(f"{source}: weights do not fit this model ({len(lines)} mismatch(es)){hint}:\n  {shown}")
    model.load_state_dict(state_dict)


@dataclass
class PartialLoad:
    """What :func:`load_what_fits` did: copied keys, model keys left as they were (new), and
    checkpoint keys not used (absent from the model, or of another shape)."""

    loaded: List[str]
    new: List[str]
    ignored: List[str]

    def summary(self, source: str) -> str:
        def head(keys: List[str]) -> str:
            return ", ".join(keys[:6]) + (f", ... ({len(keys)} in all)" if len(keys) > 6 else "")

        return (
            f"initialised from {source}: {len(self.loaded)} tensors loaded; {len(self.new)} new "
            f"(kept as built){': ' + head(self.new) if self.new else ''}; {len(self.ignored)} ignored"
            f"{': ' + head(self.ignored) if self.ignored else ''}"
        )


def load_what_fits(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], source: str) -> PartialLoad:
    """Copy every tensor of ``state_dict`` whose key and shape exist in ``model``; report the
    rest. Nothing matching at all is an error (the file is for another model)."""
    own = model.state_dict()
    fits = {k: v for k, v in state_dict.items() if k in own and own[k].shape == v.shape}
    if not fits:
        raise WeightsError(
            f"{source}: no tensor matches this model by name and shape (checkpoint keys such as "
            f"{sorted(state_dict)[:4]}; model keys such as {sorted(own)[:4]})"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in fits.items()}, strict=False)
    ignored = [
        f"{k} {list(v.shape)}" + (f" (model {list(own[k].shape)})" if k in own else "")
        for k, v in state_dict.items()
        if k not in fits
    ]
    return PartialLoad(sorted(fits), sorted(k for k in own if k not in fits), ignored)
