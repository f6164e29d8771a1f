"""Evaluation: feature extraction (the model) separated from ranking (``utils.metrics.rank``)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import ContextManager, Dict, List

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from configs.defaults import Config, EvalConfig
from datasets.build import EvalLoaders, build_eval_loaders, read_dataset
from utils.metrics import format_table, metrics_dict, rank

logger = logging.getLogger(__name__)


@dataclass
class Features:
    """L2-normalised global embeddings (float32, on the model's device) and identities."""

    text: torch.Tensor  # [Q, D]
    text_pids: torch.Tensor  # [Q]
    image: torch.Tensor  # [G, D]
    image_pids: torch.Tensor  # [G]


@torch.no_grad()
def _encode_all(
    encode, loader: DataLoader, device: torch.device, autocast: ContextManager, desc: str, progress: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    feats, pids = [], []
    for batch_pids, inputs in tqdm(loader, desc=desc, leave=False, disable=None if progress else True):
        with autocast:
            feats.append(encode(inputs.to(device, non_blocking=True)).float())
        pids.append(batch_pids)
    return F.normalize(torch.cat(feats), dim=-1), torch.cat(pids).to(device)


def extract_features(
    model: torch.nn.Module,
    loaders: EvalLoaders,
    device: torch.device,
    autocast: ContextManager | None = None,
    progress: bool = False,
) -> Features:
    """Encode the split's caption queries, then its gallery images, with ``model`` in eval
    mode (restored afterwards)."""
    autocast = autocast or contextlib.nullcontext()
    was_training = model.training
    model.eval()
    try:
        text, text_pids = _encode_all(model.encode_text, loaders.texts, device, autocast, "texts", progress)
        image, image_pids = _encode_all(model.encode_image, loaders.images, device, autocast, "images", progress)
    finally:
        model.train(was_training)
    return Features(text, text_pids, image, image_pids)


def retrieval_metrics(features: Features, i2t: bool = False, chunk_size: int = 1024) -> Dict[str, Dict[str, float]]:
    """{'t2i': {R1, R5, R10, mAP, mINP}} (and 'i2t'), cosine similarity, in percent."""
    similarity = features.text @ features.image.t()
    results = {"t2i": metrics_dict(*rank(similarity, features.text_pids, features.image_pids, 10, chunk_size))}
    if i2t:
        results["i2t"] = metrics_dict(*rank(similarity.t(), features.image_pids, features.text_pids, 10, chunk_size))
    return results


def evaluate(
    model: torch.nn.Module,
    loaders: EvalLoaders,
    device: torch.device,
    autocast: ContextManager | None = None,
    settings: EvalConfig | None = None,
    progress: bool = False,
) -> Dict[str, Dict[str, float]]:
    """Retrieval metrics of ``model`` on one dataset split; ``settings``: the config's ``eval``
    (image-to-text too, queries ranked at once), its defaults when None."""
    settings = settings or EvalConfig()
    features = extract_features(model, loaders, device, autocast, progress)
    return retrieval_metrics(features, settings.i2t, settings.query_chunk)


def results_table(results: Dict[str, Dict[str, float]]) -> str:
    rows: List[dict] = [{"task": task, **values} for task, values in results.items()]
    return format_table(rows)


def eval_targets(cfg: Config) -> List[EvalLoaders]:
    """The training dataset's evaluation split first (it selects best.pth), then the
    cross-domain datasets on the same split name (test where the split is absent)."""
    targets = [build_eval_loaders(cfg)]
    for name in cfg.eval.cross_domain:
        split = cfg.eval.split if cfg.eval.split in read_dataset(cfg.data.root, name).layout.splits else "test"
        targets.append(build_eval_loaders(cfg, name, split))
    return targets
