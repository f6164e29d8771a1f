"""test.py on a reference-format checkpoint and on bare CLIP weights (zero-shot).

Both weight files come from tests/golden (the reference's tiny FMFA checkpoint and its tiny
OpenAI-format CLIP), evaluated on a small Synthetic-PEDES test split drawn at 384 x 128 (the
size the golden recordings were made at). test.py's printed table and saved JSON must equal
an independent computation: the images read with PIL and normalised here, the captions
tokenised, both encoded by ``model_from_checkpoint``'s ``encode_image`` / ``encode_text`` in
one batch each, cosine similarity and R1/R5/R10/mAP/mINP computed in float64 numpy from
docs/method.md's definitions. The encoders used for that are tied to the reference: they
reproduce its recorded outputs (``reference_checkpoint_outputs.pt``, ``backbone.pt``).

The tiny golden models have a 1,000-token vocabulary (SOT 998, EOT 999) while the real
tokenizer emits ids up to 49,407 (SOT 49406, EOT 49407). The weight files given to test.py
are therefore copies whose token embedding grows to 49,408 rows: rows 0-999 as recorded
(so the recorded outputs still hold), rows 49406/49407 copies of the tiny SOT/EOT rows, the
others drawn from a seeded normal. Everything else, layout and key names included, is the
golden file's.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest
import torch
from conftest import COMPACT_GOLDEN, ROOT, assert_rel_close, load_golden
from PIL import Image

from dataset_tools.synthetic import generate
from datasets.tokenizer import EOT_ID, SOT_ID, tokenize
from model.build import model_from_checkpoint

# test.py by path: "test" is also a standard-library package.
_spec = importlib.util.spec_from_file_location("fmfa_test_cli_modes", ROOT / "test.py")
test_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(test_cli)

IMAGE_SIZE = (384, 128)
VOCAB = 49408
TINY_SOT, TINY_EOT = 998, 999
# OpenAI CLIP's normalisation constants, written out here (docs/method.md: Normalize(CLIP mean/std)).
MEAN = np.array([0.48145466, 0.4578275, 0.40821073])
STD = np.array([0.26862954, 0.26130258, 0.27577711])
COLUMNS = ("R1", "R5", "R10", "mAP", "mINP")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("test_cli_data")
    generate(root, num_train_ids=1, num_val_ids=0, num_test_ids=10, images_per_id=(2, 4), image_size=IMAGE_SIZE, seed=3)
    return root


def _grown_embedding(table: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    grown = torch.randn(VOCAB, table.shape[1], generator=gen, dtype=table.dtype) * table.std()
    grown[: table.shape[0]] = table
    grown[SOT_ID], grown[EOT_ID] = table[TINY_SOT], table[TINY_EOT]
    return grown


@pytest.fixture(scope="module")
def reference_checkpoint(tmp_path_factory) -> Path:
    """The golden reference checkpoint (``{"model": ..., "epoch": ...}``, ``module.`` keys)
    with the full vocabulary."""
    saved = load_golden(COMPACT_GOLDEN, "reference_checkpoint.pth")
    key = "module.base_model.token_embedding.weight"
    assert key in saved["model"] and saved["model"][key].shape[0] == 1000
    state = dict(saved["model"])
    state[key] = _grown_embedding(state[key])
    path = tmp_path_factory.mktemp("reference") / "best.pth"
    torch.save({**saved, "model": state}, path)
    return path


@pytest.fixture(scope="module")
def clip_weights(tmp_path_factory) -> Path:
    """The golden OpenAI-format CLIP state dict with the full vocabulary."""
    state = dict(load_golden(COMPACT_GOLDEN, "tiny_clip_openai_state_dict.pt"))
    assert state["token_embedding.weight"].shape[0] == 1000 and int(state["vocab_size"]) == 1000
    state["token_embedding.weight"] = _grown_embedding(state["token_embedding.weight"])
    state["vocab_size"] = torch.tensor(VOCAB)
    path = tmp_path_factory.mktemp("clip") / "tiny_clip.pt"
    torch.save(state, path)
    return path


# ---- the independent evaluation ----------------------------------------------------------------------


def read_test_split(root: Path) -> Tuple[List[Path], np.ndarray, List[str], np.ndarray]:
    """(gallery image paths, their ids, query captions, their ids) of Synthetic-PEDES's test
    split, read from its annotation file: one gallery entry per image, one query per caption."""
    folder = root / "Synthetic-PEDES"
    records = [r for r in json.loads((folder / "reid_raw.json").read_text()) if r["split"] == "test"]
    images = [folder / "imgs" / r["file_path"] for r in records]
    image_ids = np.array([r["id"] for r in records])
    captions = [c for r in records for c in r["captions"]]
    caption_ids = np.array([r["id"] for r in records for _ in r["captions"]])
    return images, image_ids, captions, caption_ids


def image_batch(paths: List[Path]) -> torch.Tensor:
    """The eval preprocessing for images already at 384 x 128: RGB in [0, 1], CLIP-normalised."""
    arrays = []
    for path in paths:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64) / 255.0
        assert pixels.shape == (*IMAGE_SIZE, 3), (path, pixels.shape)  # no resize needed
        arrays.append(((pixels - MEAN) / STD).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays)).float()


def numpy_metrics(similarity: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray) -> Dict[str, float]:
    """R1/R5/R10 (a relevant item in the top K), mAP and mINP in percent, one query at a time:
    the gallery sorted by descending similarity (non-relevant first among equal scores)."""
    hits_at, aps, inps = np.zeros(10), [], []
    for row, query_id in zip(similarity, query_ids):
        relevant = gallery_ids == query_id
        assert relevant.any()
        order = np.lexsort((relevant, -row))  # last key first: similarity descending, then relevant last
        ranks = np.flatnonzero(relevant[order]) + 1.0  # 1-based ranks of the relevant items
        hits_at[int(ranks[0]) - 1 :] += 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
    n = len(similarity)
    return {
        "R1": hits_at[0] * 100 / n,
        "R5": hits_at[4] * 100 / n,
        "R10": hits_at[9] * 100 / n,
        "mAP": float(np.mean(aps)) * 100,
        "mINP": float(np.mean(inps)) * 100,
    }


def expected_metrics(weights: Path, root: Path) -> Tuple[Dict[str, Dict[str, float]], np.ndarray]:
    """({'t2i': ..., 'i2t': ...}, similarity) of ``weights`` on the test split, computed here."""
    images, image_ids, captions, caption_ids = read_test_split(root)
    model = model_from_checkpoint(str(weights), image_size=IMAGE_SIZE)
    with torch.no_grad():
        image_feats = model.encode_image(image_batch(images)).double().numpy()
        text_feats = model.encode_text(torch.stack([tokenize(c) for c in captions])).double().numpy()
    image_feats /= np.linalg.norm(image_feats, axis=1, keepdims=True)
    text_feats /= np.linalg.norm(text_feats, axis=1, keepdims=True)
    similarity = text_feats @ image_feats.T  # rows: captions
    return {
        "t2i": numpy_metrics(similarity, caption_ids, image_ids),
        "i2t": numpy_metrics(similarity.T, image_ids, caption_ids),
    }, similarity


def printed_rows(stdout: str) -> Dict[str, Dict[str, float]]:
    """The rows of test.py's printed table: {task: {column: value}}."""
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 1 + len(COLUMNS) and cells[0] in ("t2i", "i2t"):
            rows[cells[0]] = {name: float(value) for name, value in zip(COLUMNS, cells[1:])}
    return rows


def run_test_cli(weights: Path, root: Path, output: Path, capsys) -> Tuple[dict, Dict[str, Dict[str, float]]]:
    capsys.readouterr()
    assert (
        test_cli.main(
            [
                str(weights),
                f"data.root={root}",
                "data.dataset=Synthetic-PEDES",
                "train.device=cpu",
                "data.num_workers=0",
                "eval.batch_size=7",
                "eval.query_chunk=5",
                "eval.i2t=true",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    return json.loads(output.read_text()), printed_rows(capsys.readouterr().out)


def closest_call(similarity: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray) -> float:
    """The smallest |score of a relevant item - score of a non-relevant one| over all queries:
    the only pairs whose order changes the metrics."""
    relevant = query_ids[:, None] == gallery_ids[None, :]
    gaps = np.abs(similarity[:, :, None] - similarity[:, None, :])
    return float(gaps[relevant[:, :, None] & ~relevant[:, None, :]].min())


def assert_same_metrics(saved: dict, printed: dict, expected: dict, similarity: np.ndarray, root: Path) -> None:
    # The premise of agreement within float tolerance: no relevant / non-relevant pair of a
    # query scored so close that float32 rounding (test.py batches differently) could swap it.
    # Measured: test.py's similarities differ from these by 1.1e-7 at most; the closest such
    # pair is 3.7e-6 apart (zero-shot CLIP, whose scores cluster).
    _, image_ids, _, caption_ids = read_test_split(root)
    closest = min(closest_call(similarity, caption_ids, image_ids), closest_call(similarity.T, image_ids, caption_ids))
    assert closest > 1e-6, f"a near-tie ({closest:.1e}) in the similarities; draw the data with another seed"
    assert set(saved) == set(expected) == set(printed) == {"t2i", "i2t"}
    for task, values in expected.items():
        for name in COLUMNS:
            assert saved[task][name] == pytest.approx(values[name], abs=1e-4), (task, name)
            assert printed[task][name] == pytest.approx(values[name], abs=5e-4), (task, name)  # '.3f'
    # Not a degenerate case where any ranking gives these figures.
    assert 0 < expected["t2i"]["R1"] < 100 and expected["t2i"]["mINP"] < expected["t2i"]["mAP"] < 100


def test_reference_checkpoint(reference_checkpoint, data_root, tmp_path, capsys):
    """``python test.py reference_best.pth data.dataset=...``: the reference's checkpoint
    layout, its 11-identity ID head and 2-layer IRR loaded, and evaluated correctly."""
    recorded = load_golden(COMPACT_GOLDEN, "reference_checkpoint_outputs.pt")
    model = model_from_checkpoint(str(reference_checkpoint), image_size=IMAGE_SIZE)
    assert (model.num_classes, model.cmt_depth) == (recorded["num_classes"], recorded["cmt_depth"])
    with torch.no_grad():  # the encoders of the independent computation are the reference's
        assert_rel_close(model.encode_image(recorded["images"]), recorded["image_embeds"])
        assert_rel_close(model.encode_text(recorded["text_ids"]), recorded["text_embeds"])
    output = tmp_path / "metrics.json"
    saved, printed = run_test_cli(reference_checkpoint, data_root, output, capsys)
    assert saved["weights"] == str(reference_checkpoint)
    result = saved["results"]["Synthetic-PEDES"]
    assert result.pop("split") == "test"
    expected, similarity = expected_metrics(reference_checkpoint, data_root)
    assert_same_metrics(result, printed, expected, similarity, data_root)


def test_bare_clip_weights_zero_shot(clip_weights, reference_checkpoint, data_root, tmp_path, capsys):
    """``python test.py ViT-B-16.pt data.dataset=...``: bare OpenAI-format CLIP weights give a
    model without heads, whose global features are the class token and the EOT token."""
    recorded = load_golden(COMPACT_GOLDEN, "backbone.pt")
    assert tuple(recorded["image_size"]) == IMAGE_SIZE
    model = model_from_checkpoint(str(clip_weights), image_size=IMAGE_SIZE)
    assert model.num_classes == 0 and model.cmt_depth == 0
    ids = recorded["text_ids"]
    with torch.no_grad():
        assert_rel_close(model.encode_image_tokens(recorded["images"]), recorded["image_tokens"])
        assert_rel_close(model.encode_image(recorded["images"]), recorded["image_tokens"][:, 0])
        assert_rel_close(model.encode_text(ids), recorded["text_tokens"][torch.arange(len(ids)), ids.argmax(-1)])
    output = tmp_path / "zero_shot.json"
    saved, printed = run_test_cli(clip_weights, data_root, output, capsys)
    result = saved["results"]["Synthetic-PEDES"]
    assert result.pop("split") == "test"
    expected, similarity = expected_metrics(clip_weights, data_root)
    assert_same_metrics(result, printed, expected, similarity, data_root)
    # The zero-shot figures are the CLIP's own, not the fine-tuned checkpoint's.
    fine_tuned, _ = expected_metrics(reference_checkpoint, data_root)
    assert fine_tuned["t2i"] != expected["t2i"]


def test_weights_with_a_smaller_vocabulary_are_refused(data_root, tmp_path, capsys):
    """The golden checkpoint as recorded (1,000 tokens): test.py names the file and the
    vocabulary it expected instead of failing on an index deep in the text tower."""
    output = tmp_path / "metrics.json"
    status = test_cli.main(
        [str(COMPACT_GOLDEN / "reference_checkpoint.pth"), f"data.root={data_root}", "data.dataset=Synthetic-PEDES"]
        + ["train.device=cpu", "data.num_workers=0", "--output", str(output)]
    )
    assert status == 2
    assert re.search(r"reference_checkpoint\.pth: its token embedding has 1000 rows.*49408", capsys.readouterr().err)
    assert not output.exists()
