"""Loading a trained model for use (test.py, search.py, visualize.py, export_features.py).

A source is a run folder (its ``config.yaml`` and ``best.pth`` or ``last.pth``), a
checkpoint of this project or of the reference, or bare CLIP weights. The architecture
is read from the weights; image size, caption length and evaluation settings come from
the run's config (or ``--config`` / overrides, else the defaults).
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ContextManager, Iterator, Optional, Protocol, Sequence, Tuple

import torch
import torch.nn.functional as F

from configs.defaults import Config
from configs.errors import ConfigError, UserError
from configs.loader import load_config
from datasets.tokenizer import VOCAB_SIZE
from model.build import model_from_checkpoint
from model.clip_weights import CLIP_WEIGHTS_URL
from model.fmfa import FMFA
from model.weights_file import WeightsError, WeightsNotFoundError
from processor.precision import Precision
from utils.distributed import pick_device
from utils.run_folder import BEST, CONFIG_FILE, LAST

logger = logging.getLogger(__name__)


def source_config(
    source: str | Path, config: Optional[str] = None, overrides: Sequence[str] = (), which: str = "best"
) -> Tuple[Config, Path]:
    """(validated config, weights file) of a run folder or a weights file; the weights file
    may be missing (:func:`check_weights` says so). A weights file with the run's config.yaml
    beside it is read with that config unless ``config`` names another (logged)."""
    source = Path(source)
    if source.is_dir():
        saved = source / CONFIG_FILE
        if not saved.is_file():
            raise ConfigError(f"{source} is a folder without {CONFIG_FILE}; give a run folder or a weights file")
        return load_config(config or saved, overrides), source / (BEST if which == "best" else LAST)
    beside = source.parent / CONFIG_FILE
    if config is None and beside.is_file():
        logger.info("%s: read with %s, the run's config beside it (--config FILE chooses another)", source, beside)
        return load_config(beside, overrides), source
    return load_config(config, overrides), source


def uses_default_config(source: str | Path, config: Optional[str]) -> bool:
    """A weights file read with the defaults: no ``--config`` and no run config beside it."""
    source = Path(source)
    return config is None and source.is_file() and not (source.parent / CONFIG_FILE).is_file()


@contextlib.contextmanager
def default_config_hint(source: str | Path, config: Optional[str]) -> Iterator[None]:
    """A user error met while a weights file is used with the default config gets the two ways
    to give a run's weights their config (its dataset, image size and text length)."""
    try:
        yield
    except UserError as error:
        if not uses_default_config(source, config):
            raise
        raise ConfigError(
            f"{error}\n({source} was read with the default config (data.dataset, model.image_size, "
            f"data.text_length, ...) as no --config was given and no {CONFIG_FILE} is beside it; for a "
            f"trained run's weights give its run folder as the source, or --config RUN_FOLDER/{CONFIG_FILE})"
        ) from None


def check_weights(source: str | Path, weights: Path, argument: str = "SOURCE") -> None:
    """``weights`` exists; else a :class:`WeightsNotFoundError` saying why it is missing and
    what to give instead (``argument``: how the program's usage names the source)."""
    if weights.is_file():
        return
    if Path(source).is_dir():
        raise WeightsNotFoundError(f"checkpoint not found: {weights}. {_missing_in_run(Path(source), weights.name)}")
    raise WeightsNotFoundError(
        f"checkpoint not found: {weights} (given as {argument}). {argument} is a run folder of train.py "
        f"(runs/<dataset>/<run>), a checkpoint file (this project's or the authors'), or CLIP weights: "
        f"OpenAI's CLIP ViT-B/16 for zero-shot evaluation: `wget -O data/ViT-B-16.pt {CLIP_WEIGHTS_URL}`"
    )


def _missing_in_run(run: Path, name: str) -> str:
    """Why a run folder lacks ``name`` (best.pth or last.pth), and the other choice if it has one."""
    if name == BEST:
        why = (
            f"{run} holds no {BEST} yet: it is written at the first evaluation (every train.eval_period "
            "epochs, and after the last one) that improves R1"
        )
        other, flag = run / LAST, "--which last"
    else:
        why = f"{run} holds no {LAST}: it is written when the run's first epoch ends"
        other, flag = run / BEST, "--which best"
    if other.is_file():
        return f"{why}; {flag} evaluates its {other.name}"
    return f"{why}, and it holds no {other.name} either: no epoch has finished, so there are no weights to use yet"


def resolve_source(
    source: str | Path,
    config: Optional[str] = None,
    overrides: Sequence[str] = (),
    which: str = "best",
    argument: str = "SOURCE",
) -> Tuple[Config, Path]:
    """(validated config, weights file) of a run folder or a weights file that exists."""
    cfg, weights = source_config(source, config, overrides, which)
    check_weights(source, weights, argument)
    return cfg, weights


class Encoders(Protocol):
    """What searching a folder needs from a model, PyTorch or exported (serving.onnx_model)."""

    weights: Path  # the file whose name and stamp key the gallery's embedding cache

    @property
    def image_size(self) -> Tuple[int, int]: ...

    @property
    def text_length(self) -> int: ...

    def embed_images(self, images: torch.Tensor) -> torch.Tensor: ...

    def embed_texts(self, ids: torch.Tensor) -> torch.Tensor: ...


@dataclass
class LoadedModel:
    model: FMFA
    cfg: Config
    weights: Path
    device: torch.device
    autocast: ContextManager

    @property
    def image_size(self) -> Tuple[int, int]:
        """(H, W) the model's images are resized to."""
        return int(self.cfg.model.image_size[0]), int(self.cfg.model.image_size[1])

    @property
    def text_length(self) -> int:
        """Token ids per caption."""
        return int(self.cfg.data.text_length)

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """[N, 3, H, W] preprocessed images -> [N, D] L2-normalised float32 embeddings on the CPU."""
        with self.autocast:
            out = self.model.encode_image(images.to(self.device))
        return F.normalize(out.float(), dim=-1).cpu()

    @torch.no_grad()
    def embed_texts(self, ids: torch.Tensor) -> torch.Tensor:
        """[N, L] token ids -> [N, D] L2-normalised float32 embeddings on the CPU."""
        with self.autocast:
            out = self.model.encode_text(ids.to(self.device))
        return F.normalize(out.float(), dim=-1).cpu()


def caption_model(cfg: Config, weights: str | Path) -> FMFA:
    """The model of ``weights`` (eval mode, CPU) at ``cfg``'s image size, refused when its
    token table is smaller than the tokenizer's vocabulary: the captions' SOT/EOT ids
    (49406/49407) would index past it."""
    model = model_from_checkpoint(str(weights), image_size=tuple(cfg.model.image_size))
    rows = model.base_model.token_embedding.num_embeddings
    if rows < VOCAB_SIZE:
        raise WeightsError(
            f"{weights}: its token embedding has {rows} rows, but captions are tokenised with the "
            f"CLIP BPE vocabulary (datasets/tokenizer.py, ids up to {VOCAB_SIZE - 1}); "
            f"expected weights with a {VOCAB_SIZE}-token embedding"
        )
    return model


def model_for(cfg: Config, weights: Path) -> LoadedModel:
    """The model of ``weights`` in eval mode on ``cfg``'s device, with its inference autocast."""
    device = pick_device(cfg.train.device)
    model = caption_model(cfg, weights).to(device)
    return LoadedModel(model, cfg, weights, device, Precision(cfg.train.precision, device).inference_autocast())


def load_model(
    source: str | Path,
    config: Optional[str] = None,
    overrides: Sequence[str] = (),
    which: str = "best",
    argument: str = "SOURCE",
) -> LoadedModel:
    """The model of a run folder or weights file (see :func:`resolve_source`)."""
    return model_for(*resolve_source(source, config, overrides, which, argument))
