"""search.py, visualize.py, export_features.py and model.init_from on a quick-start-config
checkpoint trained for one epoch on a small synthetic dataset."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import numpy_oracles as npo
import pytest
import torch
from conftest import user_error
from PIL import Image
from train_fixtures import ONE_EPOCH_QUICKSTART

import export_features
import search
import train as train_cli
import visualize
from configs.errors import UserError
from configs.loader import load_config
from dataset_tools.synthetic import generate
from datasets.bases import load_image
from datasets.build import build_eval_loaders, read_dataset
from datasets.tokenizer import tokenize
from datasets.transforms import build_transform
from model.build import build_model, initialise_from
from model.objectives import text_patch_affinity
from processor.evaluator import extract_features
from serving import figures
from serving.efa_maps import word_positions
from serving.figures import CORRECT, WRONG
from serving.gallery import encode_folder
from serving.inference import load_model

SMALL = [*ONE_EPOCH_QUICKSTART, "train.auto_resume=false"]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """(data root, run folder, test image folder) of a one-epoch quick-start-config run."""
    base = tmp_path_factory.mktemp("tools")
    generate(base / "data", num_train_ids=12, num_val_ids=2, num_test_ids=6, image_size=(96, 32), seed=1)
    run = base / "run"
    assert (
        train_cli.main(
            ["--config", "configs/quickstart.yaml", *SMALL, f"data.root={base / 'data'}", f"train.output_dir={run}"]
        )
        == 0
    )
    return base / "data", run, base / "data" / "Synthetic-PEDES" / "imgs" / "test"


def _gallery_copy(images, tmp_path):
    folder = tmp_path / "gallery"
    shutil.copytree(images, folder)
    return folder


def test_search_ranks_like_the_evaluator_and_caches(quick, tmp_path, capsys, caplog):
    root, run, images = quick
    folder = _gallery_copy(images, tmp_path)
    loaded = load_model(run, overrides=[f"data.root={root}"])
    first = encode_folder(folder, loaded)
    assert first.encoded == len(first.paths) == len(list(folder.glob("*.jpg")))
    assert encode_folder(folder, loaded).encoded == 0  # all from the cache
    os.utime(first.paths[0], ns=(1, 1))  # one changed file is encoded again, alone
    assert encode_folder(folder, loaded).encoded == 1
    # The search scores are the evaluator's similarities (same model, same preprocessing).
    loaders = build_eval_loaders(loaded.cfg, root=str(root))
    features = extract_features(loaded.model, loaders, loaded.device)
    query = read_dataset(str(root), "Synthetic-PEDES").eval_set("test").captions[0]
    text = features.text[0]
    row_of = {Path(p).name: i for i, p in enumerate(loaders.images.dataset.image_paths)}
    scores = {p.name: float(features.image[row_of[p.name]] @ text) for p in first.paths}
    hits = search.rank_gallery(loaded, first, query, 5)
    check_top_k(hits, scores, 5)
    # Deliberately wrong rankings fail the same check: reversed, first files, shifted by one.
    by_score = sorted(first.paths, key=lambda p: -scores[p.name])
    for broken in (
        hits[::-1],
        [(p, scores[p.name]) for p in first.paths[:5]],
        [(p, scores[p.name]) for p in by_score[1:6]],
    ):
        with pytest.raises(AssertionError):
            check_top_k(broken, scores, 5)
    output = tmp_path / "hits.png"
    assert (
        search.main(
            [
                "--checkpoint",
                str(run),
                "--images",
                str(folder),
                "--query",
                query,
                "--top-k",
                "4",
                "--output",
                str(output),
                f"data.root={root}",
            ]
        )
        == 0
    )
    with Image.open(output) as png:
        assert png.format == "PNG" and png.width > png.height
    printed = [line for line in capsys.readouterr().out.splitlines() if str(folder) in line]
    assert [Path(line.split("|")[3].strip()).name for line in printed] == [p.name for p in by_score[:4]]


def check_top_k(hits, scores: dict, k: int) -> None:
    """``hits`` = the k gallery images of highest evaluator score, best first: the hit at rank r
    scores the r-th highest of an independent sort of every image's similarity (ties within
    1e-5 may swap), its reported score is that similarity, and no image comes twice."""
    expected = sorted(scores.values(), reverse=True)[:k]
    assert len(hits) == k and len({path.name for path, _ in hits}) == k
    for rank, (path, score) in enumerate(hits):
        assert score == pytest.approx(scores[path.name], abs=1e-5)
        assert scores[path.name] == pytest.approx(expected[rank], abs=1e-5), f"rank {rank + 1}: {path.name}"


def test_search_errors(quick, tmp_path, capsys):
    root, run, images = quick
    empty = tmp_path / "empty"
    empty.mkdir()
    assert f"no images in {empty}" in user_error(
        capsys, search.main, ["--checkpoint", str(run), "--images", str(empty), "--query", "a man"]
    )
    assert "checkpoint not found" in user_error(
        capsys, search.main, ["--checkpoint", str(tmp_path / "nope.pth"), "--images", str(images), "--query", "x"]
    )
    folder = _gallery_copy(images, tmp_path)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "empty.png").write_bytes(b"")
    assert (
        search.main(
            [
                "--checkpoint",
                str(run),
                "--images",
                str(folder),
                "--query",
                "a man in a black jacket",
                "--output",
                str(tmp_path / "s.png"),
                f"data.root={root}",
            ]
        )
        == 0
    )
    log = capsys.readouterr().out
    assert "broken.jpg cannot be decoded" in log and "empty.png cannot be decoded" in log
    assert "2 unreadable skipped" in log


def _coloured_pixels(png_path, colour: str) -> int:
    target = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
    pixels = np.asarray(Image.open(png_path).convert("RGB")).astype(int)
    return int((np.abs(pixels - target).sum(-1) < 30).sum())


def test_retrieval_pictures(quick, tmp_path):
    root, run, _ = quick
    out = tmp_path / "figs"
    assert (
        visualize.main(["retrieval", str(run), "--queries", "0", "3", "--output-dir", str(out), "--root", str(root)])
        == 0
    )
    pictures = sorted(out.glob("retrieval_*.png"))
    assert [p.name for p in pictures] == [f"retrieval_Synthetic-PEDES_test_{q}.png" for q in (0, 3)]
    # 10 framed results per picture; the 6 test identities guarantee both kinds of frame.
    assert _coloured_pixels(pictures[0], CORRECT) + _coloured_pixels(pictures[1], CORRECT) > 100
    assert _coloured_pixels(pictures[0], WRONG) > 100
    assert (
        visualize.main(["retrieval", str(run), "--queries", "100000", "--output-dir", str(out), "--root", str(root)])
        == 2
    )


def test_efa_similarity_maps(quick, tmp_path):
    root, run, _ = quick
    out = tmp_path / "figs"
    assert visualize.main(["efa", str(run), "--index", "1", "--output-dir", str(out), "--root", str(root)]) == 0
    [picture] = out.glob("efa_*.png")
    with Image.open(picture) as png:
        assert png.height > png.width  # one row per word
    loaded = load_model(run, overrides=[f"data.root={root}"])
    ids = tokenize("a man in a red coat with a backpack", 48)
    assert word_positions(ids, "backpack", 48, "") == [9]  # after SOT and 8 words
    with pytest.raises(UserError, match="'umbrella' is not in the caption"):
        word_positions(ids, "umbrella", 48, "caption text")
    dense, sparse = text_patch_affinity(torch.randn(2, 5, 8), torch.randn(2, 12, 8), threshold=3.0)
    assert torch.allclose(sparse.sum(-1), torch.ones(2, 5))
    assert torch.equal(sparse == 0, dense <= 3.0 / 12)
    assert loaded.model.base_model.visual.grid_size == (12, 4)


def _drawing(monkeypatch, draw):
    """Run ``draw()``, which writes one similarity-map picture: (its result, the figure drawn)."""
    drawn = []
    with monkeypatch.context() as patch:
        patch.setattr(figures.plt, "close", drawn.append)  # keep the figure for its geometry
        result = draw()
    [figure] = drawn
    return result, figure


def _after_panel(png_path, figure, row: int, image, grid) -> np.ndarray:
    """RGB at the centre of every patch cell of word ``row``'s "after sparsification" panel."""
    pixels = np.asarray(Image.open(png_path).convert("RGB")).astype(int)
    rows, cols = grid
    centres = [
        ((j + 0.5) * image.size[0] / cols, (i + 0.5) * image.size[1] / rows) for i in range(rows) for j in range(cols)
    ]
    axis = figure.axes[3 * row + 2]  # per word: image, before, after
    fractions = figure.transFigure.inverted().transform(axis.transData.transform(centres))
    height, width = pixels.shape[:2]
    return np.array([pixels[int((1 - fy) * height), int(fx * width)] for fx, fy in fractions])


def check_efa_picture(picture, figure, reference, reference_figure, image, after) -> None:
    """In each word's "after" panel, a patch the sparse map prunes (after == 0) shows the bare
    image (the pixel of ``reference``, the same picture with every patch pruned) and every
    other patch is coloured (differs from it)."""
    for row in range(len(after)):
        ours = _after_panel(picture, figure, row, image, after[row].shape)
        bare = _after_panel(reference, reference_figure, row, image, after[row].shape)
        change = np.abs(ours - bare).max(-1).reshape(after[row].shape)
        pruned = after[row] == 0
        assert (change[pruned] == 0).all(), f"word {row}: pruned patches coloured: {np.argwhere(pruned & (change > 0))}"
        assert (change[~pruned] > 2).all(), (
            f"word {row}: kept patches uncoloured: {np.argwhere(~pruned & (change <= 2))}"
        )


def test_efa_picture_colours_exactly_the_patches_the_sparse_map_keeps(quick, tmp_path, monkeypatch):
    """visualize efa draws docs/method.md's sparse map (checked against the numpy oracle on the
    model's own tokens) and its picture leaves pruned patches uncoloured, colours the others;
    pictures that colour pruned patches, or nothing, fail the same check."""
    root, run, _ = quick
    calls, real_maps = [], figures.similarity_maps
    monkeypatch.setattr(visualize, "similarity_maps", lambda *a: calls.append(a) or real_maps(*a))
    out = tmp_path / "figs"
    status, figure = _drawing(
        monkeypatch,
        lambda: visualize.main(["efa", str(run), "--index", "1", "--output-dir", str(out), "--root", str(root)]),
    )
    assert status == 0
    [(image, words, before, after, caption, picture)] = calls
    assert (after == 0).any() and (after > 0).any(), "the case needs pruned and kept patches"
    # The maps: the oracle's dense / sparse affinity of the model's tokens, averaged over each word's pieces.
    loaded = load_model(run, overrides=[f"data.root={root}"])
    cfg, record = loaded.cfg, read_dataset(str(root), "Synthetic-PEDES").split_records("test")[1]
    ids = tokenize(caption, cfg.data.text_length)
    pixels = build_transform(cfg.model.image_size, train=False)(load_image(record.image_path)).unsqueeze(0)
    with torch.no_grad(), loaded.autocast:
        text = loaded.model.encode_text_tokens(ids.unsqueeze(0)).double().numpy()
        patches = loaded.model.encode_image_tokens(pixels).double().numpy()[:, 1:]
    dense = npo.row_min_max(npo.affinity(text, patches))[0]
    sparse = npo.row_normalise(npo.sparsify(npo.row_min_max(npo.affinity(text, patches)), cfg.efa.threshold))[0]
    grid = tuple(size // cfg.model.patch_size for size in cfg.model.image_size)  # (12, 4)
    assert after.shape == before.shape == (len(words), *grid)
    for row, word in enumerate(words):
        places = word_positions(ids, word, cfg.data.text_length, caption)
        np.testing.assert_allclose(before[row], dense[places].mean(0).reshape(grid), atol=1e-5)
        np.testing.assert_allclose(after[row], sparse[places].mean(0).reshape(grid), atol=1e-5)
        assert np.array_equal(after[row] == 0, sparse[places].mean(0).reshape(grid) == 0)

    # The picture.
    def draw(shown_after, name):
        return _drawing(monkeypatch, lambda: real_maps(image, words, before, shown_after, caption, tmp_path / name))[1]

    bare_figure = draw(np.zeros_like(after), "bare.png")
    check_efa_picture(picture, figure, tmp_path / "bare.png", bare_figure, image, after)
    chequered = np.where(np.indices(after.shape).sum(0) % 2 == 0, 0.0, after)  # half the patches pruned
    check_efa_picture(
        tmp_path / "chequered.png",
        draw(chequered, "chequered.png"),
        tmp_path / "bare.png",
        bare_figure,
        image,
        chequered,
    )
    unpruned = np.where(after == 0, after[after > 0].min() / 10, after)  # pruned patches drawn anyway
    with pytest.raises(AssertionError, match="pruned patches coloured"):
        check_efa_picture(
            tmp_path / "unpruned.png", draw(unpruned, "unpruned.png"), tmp_path / "bare.png", bare_figure, image, after
        )
    with pytest.raises(AssertionError, match="kept patches uncoloured"):
        check_efa_picture(tmp_path / "bare.png", bare_figure, tmp_path / "bare.png", bare_figure, image, after)
    figures.plt.close("all")


def test_export_features(quick, tmp_path):
    root, run, images = quick
    output = tmp_path / "test.npz"
    assert (
        export_features.main([str(run), "--dataset", "Synthetic-PEDES", "--root", str(root), "--output", str(output)])
        == 0
    )
    arrays = np.load(output, allow_pickle=False)
    loaded = load_model(run, overrides=[f"data.root={root}"])
    features = extract_features(loaded.model, build_eval_loaders(loaded.cfg, root=str(root)), loaded.device)
    assert torch.allclose(torch.from_numpy(arrays["image_features"]), features.image, atol=1e-6)
    assert torch.allclose(torch.from_numpy(arrays["text_features"]), features.text, atol=1e-6)
    assert arrays["captions"].shape == arrays["text_pids"].shape == (features.text.shape[0],)
    assert arrays["image_paths"][0].endswith(".jpg")
    folder_output = tmp_path / "folder.npz"
    assert export_features.main([str(run), "--images", str(images), "--output", str(folder_output)]) == 0
    folder = np.load(folder_output, allow_pickle=False)
    assert folder["image_features"].shape == (len(list(images.glob("*.jpg"))), 64)
    assert not list(tmp_path.glob("*.tmp.npz"))


def test_init_from_a_reference_layout_checkpoint(tmp_path, caplog):
    base = [
        "model.pretrain=none",
        "model.image_size=[64,32]",
        "model.patch_size=16",
        "model.embed_dim=64",
        "model.vision_width=64",
        "model.vision_layers=1",
        "model.text_width=64",
        "model.text_layers=1",
        "model.cmt_depth=1",
    ]
    torch.manual_seed(1)
    source = build_model(load_config(None, [*base, "model.image_size=[64,64]"]), num_classes=11)  # square grid
    pretrained = tmp_path / "reid_pretrained.pth"  # the reference's layout: {"model": ...} with module.
    torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}}, pretrained)
    caplog.set_level(logging.INFO)
    torch.manual_seed(2)
    cfg = load_config(None, [*base, "model.image_size=[96,32]", f"model.init_from={pretrained}"])
    model = build_model(cfg, num_classes=5)  # other identities, other image size
    assert "classifier.weight [11, 64] (model [5, 64])" in caplog.text
    assert "base_model.visual.positional_embedding" not in caplog.text  # resized, so loaded
    assert torch.equal(model.base_model.token_embedding.weight, source.base_model.token_embedding.weight)
    assert torch.equal(model.cross_attn.in_proj_weight, source.cross_attn.in_proj_weight)
    assert not torch.equal(model.classifier.weight, source.classifier.weight[:5])  # kept as built
    report = initialise_from(build_model(load_config(None, base), num_classes=11), str(pretrained))
    assert report.new == [] and report.ignored == [] and len(report.loaded) == len(source.state_dict())
    # A non-square grid that differs cannot be resized: reported as ignored, with both shapes.
    non_square = build_model(load_config(None, [*base, "model.image_size=[96,32]"]), num_classes=11)
    torch.save({"model": non_square.state_dict()}, pretrained)
    report = initialise_from(build_model(load_config(None, base), num_classes=11), str(pretrained))
    assert report.ignored == ["base_model.visual.positional_embedding [13, 64] (model [9, 64])"]
    torch.save({"model": {"fc.weight": torch.ones(2, 2)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="needs an FMFA-layout checkpoint"):
        initialise_from(model, str(tmp_path / "other.pth"))
