"""export_onnx.py, search.py --onnx, the tokenizer.json and docs/onnx.md's stand-alone example,
on a tiny model trained for one epoch on the CUHK-PEDES fixture; the latency benchmark's tiny preset."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import ROOT, run_ok, user_error
from tokenizers import Tokenizer

import export_onnx
import search
from benchmarks import onnx_latency
from datasets.bases import load_image
from datasets.build import read_dataset
from datasets.tokenizer import EOT_ID, SOT_ID, tokenize, tokenize_batch
from datasets.transforms import build_transform
from serving import onnx_export, page_search
from serving.gallery import encode_folder
from serving.inference import load_model
from serving.onnx_export import TOLERANCE, compare_top_k
from serving.onnx_model import OnnxEncoders
from serving.onnx_tokenizer import build_hf_tokenizer, clean_caption
from serving.page_search import PageMessage, efa_map, split_gallery

CONTEXT = 32  # the tiny run's model.context_length / data.text_length
# Captions of every kind the tokenizer meets: punctuation, numbers, contractions, accents and
# other scripts, text ftfy repairs (mojibake, entities, curly quotes, ligatures, full width,
# control characters), unusual whitespace, the final sigma, the special spellings, long ones.
CAPTIONS = [
    "A man in a black jacket.",
    "",
    "   ",
    "The woman's bag, isn't it? 123 4.5kg!! (left) [right] {x} #1 @2 ~3",
    "Café naïve résumé — “quoted” ‘single’ …",
    "jekyll and hyde",
    "日本語のテキスト 中文 한국어 ภาษาไทย हिन्दी",
    "ΟΔΟΣ ΣΊΣΥΦΟΣ ΟΔΟΣ's ΑΣ. Σ",
    "İstanbul STRASSE straße ẞ ǅ",
    "emoji 😀👍🏽 test",
    "tab\tnew\nline  \u3000x\xa0y\x85z",
    "&amp; &lt;b&gt; &amp;amp; &#39;",
    "mojibake cafÃ© â€œhiâ€\x9d",
    "ﬁne ＦＵＬＬ width",
    "control\x00chars\x07\x1c",
    "a <|startoftext|> b <|endoftext|> c <|mask|> <|EndOfText|>x",
    "don't 'S 'LL we'd",
    "3.14159 1,000,000 ½ ² Ⅻ",
    "a\u0301 e\u0301 decomposed, \u0345 ypogegrammeni, zero\u200bwidth",
    " ".join(["word"] * 100),
    " ".join(f"w{i}" for i in range(90)),
    "A young woman with long black hair wearing a white T-shirt, blue jeans and red sneakers, carrying a brown bag.",
]


@pytest.fixture(scope="module")
def tiny(one_epoch_run, tmp_path_factory):
    """(data root, run folder, export folder, export_onnx.py's printout) of the session's
    one-epoch tiny run (conftest.one_epoch_run), exported by export_onnx's main in process."""
    root, run = one_epoch_run
    exported = tmp_path_factory.mktemp("onnx") / "exported"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert export_onnx.main([str(run), "--output", str(exported)]) == 0
    return root, run, exported, printed.getvalue()


def _pytorch(run: Path, root: Path):
    return load_model(run, overrides=[f"data.root={root}"])


@pytest.mark.slow(seconds=15)
def test_export_writes_verified_encoders_with_dynamic_batch(tiny):
    root, run, exported, printed = tiny
    assert sorted(p.name for p in exported.iterdir()) == ["image.onnx", "model.json", "text.onnx", "tokenizer.json"]
    spec = json.loads((exported / "model.json").read_text())
    check = spec["verification"]
    eval_set = read_dataset(str(root), "CUHK-PEDES").eval_set("test")
    assert (check["images"], check["captions"]) == (len(eval_set.image_paths), len(eval_set.captions)) == (8, 16)
    assert 0 <= check["image_max_abs_diff"] <= TOLERANCE and 0 <= check["text_max_abs_diff"] <= TOLERANCE
    assert check["top_k_identical"] + check["top_k_near_ties"] == 16 and check["top_k"] == 8
    assert check["tokenizer_captions_checked"] == 16 and check["tokenizer_captions_different"] == 0
    assert f"{check['image_max_abs_diff']:.2e} (images)" in printed
    assert spec["embed_dim"] == 64 and spec["image"]["size"] == [32, 16] and spec["text"]["context_length"] == CONTEXT
    assert (spec["text"]["mask_id"], spec["text"]["sot_id"], spec["text"]["eot_id"]) == (49405, SOT_ID, EOT_ID)
    for name, meta in spec["files"].items():
        data = (exported / name).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (meta["bytes"], meta["sha256"])
    # The graphs: named input/output, dynamic N, the model's fixed H, W and L, opset 18.
    for name, input_name, dtype, fixed in (
        ("image.onnx", "images", onnx.TensorProto.FLOAT, [3, 32, 16]),
        ("text.onnx", "text_ids", onnx.TensorProto.INT64, [CONTEXT]),
    ):
        graph = onnx.load(exported / name)
        [inp], [out] = graph.graph.input, graph.graph.output
        dims = inp.type.tensor_type.shape.dim
        assert (inp.name, inp.type.tensor_type.elem_type, out.name) == (input_name, dtype, "embeddings")
        assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == fixed
        assert graph.opset_import[0].version == 18
    # Any batch size, against PyTorch: captions of different lengths (EOT at different places) in
    # one batch, each row also equal to that caption encoded alone.
    loaded, encoders = _pytorch(run, root), OnnxEncoders(exported)
    varied = ["a man", "", CAPTIONS[-1], CAPTIONS[3], "a woman in a red coat", "a tall man in grey", "tall"]
    for n in (1, 3, 7):
        ids = tokenize_batch(varied[:n], CONTEXT)
        assert len(set(ids.argmax(1).tolist())) == n  # n different EOT positions
        onnx_out = encoders.embed_texts(ids)
        assert onnx_out.shape == (n, 64)
        assert (onnx_out - loaded.embed_texts(ids)).abs().max() <= TOLERANCE
        assert torch.allclose(onnx_out.norm(dim=1), torch.ones(n), atol=1e-5)
        assert (onnx_out[-1] - encoders.embed_texts(ids[-1:])[0]).abs().max() <= 1e-6
        images = torch.randn(n, 3, 32, 16, generator=torch.Generator().manual_seed(n))
        assert (encoders.embed_images(images) - loaded.embed_images(images)).abs().max() <= TOLERANCE


def _perturbed_export(model, image_size):
    """The real export of a copy of ``model`` whose text projection moved by about 1%."""
    other = copy.deepcopy(model)
    with torch.no_grad():
        projection = other.base_model.text_projection
        noise = torch.randn(projection.shape, generator=torch.Generator().manual_seed(0))
        projection.add_(0.01 * projection.std() * noise)
    return REAL_EXPORT(other, image_size)


REAL_EXPORT = onnx_export.export_encoders


@pytest.mark.slow(seconds=10)
def test_export_that_does_not_reproduce_pytorch_fails_and_writes_nothing(tiny, tmp_path, capsys, monkeypatch):
    _, run, _, _ = tiny
    monkeypatch.setattr(onnx_export, "export_encoders", _perturbed_export)
    output = tmp_path / "bad"
    message = user_error(capsys, export_onnx.main, [str(run), "--output", str(output), "--limit", "6"])
    assert "onnxruntime does not reproduce PyTorch, nothing written" in message
    diff = float(re.search(r"([0-9.e+-]+) \(captions\)", message).group(1))
    assert diff > TOLERANCE and "6 images, 6 captions" in message
    assert not output.exists()


def test_top_k_comparison_tells_ties_from_mismatches():
    reference = torch.tensor([[0.9, 0.5, 0.5 + 1e-6, 0.1], [0.9, 0.8, 0.7, 0.1]], dtype=torch.float64)
    assert compare_top_k(reference, reference.clone(), 3) == (2, 0, 0)
    tied = reference + torch.tensor([[0, 0, -2e-6, 0], [0, 0, 0, 0]], dtype=torch.float64)  # row 0: the tie swaps
    assert compare_top_k(reference, tied, 3) == (1, 1, 0)
    swapped = reference.clone()
    swapped[1, 1], swapped[1, 2] = 0.7, 0.8  # row 1: a real change of order
    assert compare_top_k(reference, swapped, 3) == (1, 0, 1)
    assert compare_top_k(reference, swapped, 1) == (2, 0, 0)  # the top 1 is unchanged


def test_sources_that_cannot_be_exported_are_one_line_errors(tiny, tmp_path, capsys):
    root, run, exported, _ = tiny
    out = ["--output", str(tmp_path / "out")]
    assert "checkpoint not found" in user_error(capsys, export_onnx.main, [str(tmp_path / "nope.pth"), *out])
    text_file = tmp_path / "notes.pth"
    text_file.write_text("not weights")
    assert str(text_file) in user_error(
        capsys, export_onnx.main, [str(text_file), *out, "--root", str(root), "data.num_workers=0"]
    )
    assert "without config.yaml" in user_error(capsys, export_onnx.main, [str(tmp_path), *out])
    assert "data.text_length=16" in user_error(capsys, export_onnx.main, [str(run), *out, "data.text_length=16"])
    assert "is a file" in user_error(capsys, export_onnx.main, [str(run), "--output", str(text_file)])
    assert "not found" in user_error(capsys, export_onnx.main, [str(run), *out, "--root", str(tmp_path / "none")])
    assert not (tmp_path / "out").exists()
    # search.py --onnx on a folder that is not an export, or an incomplete one.
    images = root / "CUHK-PEDES" / "imgs" / "test"
    query = ["--images", str(images), "--query", "a man"]
    assert "model.json not found" in user_error(capsys, search.main, ["--onnx", str(tmp_path), *query])
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("model.json", "image.onnx"):
        shutil.copy(exported / name, partial)
    assert "text.onnx not found" in user_error(capsys, search.main, ["--onnx", str(partial), *query])
    for argv in ([*query], ["--onnx", str(exported), "--checkpoint", str(run), *query]):
        with pytest.raises(SystemExit) as stop:
            search.main(argv)
        assert stop.value.code == 2
    assert "give --checkpoint RUN_OR_WEIGHTS or --onnx DIR (exactly one" in capsys.readouterr().err


def test_search_on_onnx_ranks_like_pytorch_and_caches(tiny, tmp_path, capsys):
    root, run, exported, _ = tiny
    folder = tmp_path / "gallery"
    shutil.copytree(root / "CUHK-PEDES" / "imgs" / "test", folder)
    loaded, encoders = _pytorch(run, root), OnnxEncoders(exported)
    by_torch = encode_folder(folder, loaded)
    first = encode_folder(folder, encoders)
    assert first.encoded == len(first.paths) == 8  # its own cache, keyed by image.onnx
    assert encode_folder(folder, encoders).encoded == 0
    os.utime(first.paths[0], ns=(1, 1))
    assert encode_folder(folder, encoders).encoded == 1
    assert len(list((folder / ".fmfa_cache").glob("*.pt"))) == 2
    assert (first.features - by_torch.features).abs().max() <= TOLERANCE
    for query in read_dataset(str(root), "CUHK-PEDES").eval_set("test").captions:
        ours, theirs = search.rank_gallery(encoders, first, query, 8), search.rank_gallery(loaded, by_torch, query, 8)
        assert [p.name for p, _ in ours] == [p.name for p, _ in theirs]
        assert np.allclose([s for _, s in ours], [s for _, s in theirs], atol=TOLERANCE)
    printed = {}
    for flag in (["--onnx", str(exported)], ["--checkpoint", str(run), f"data.root={root}"]):
        capsys.readouterr()
        assert (
            search.main(
                [
                    *flag,
                    "--images",
                    str(folder),
                    "--query",
                    "person 9 wearing colour 2",
                    "--top-k",
                    "5",
                    "--output",
                    str(tmp_path / "hits.png"),
                ]
            )
            == 0
        )
        rows = [line.split("|") for line in capsys.readouterr().out.splitlines() if str(folder) in line]
        printed[flag[0]] = [(cells[2].strip(), Path(cells[3].strip()).name) for cells in rows]
    assert len(printed["--onnx"]) == 5 and printed["--onnx"] == printed["--checkpoint"]


def test_tokenizer_json_gives_the_project_ids():
    """After the project's text repair (ftfy, HTML entities) tokenizer.json gives exactly the
    project's ids on every caption class; on its own, on text that needs no repair."""
    for length in (77, CONTEXT):
        tokenizer = Tokenizer.from_str(build_hf_tokenizer(length).to_str())
        for caption in CAPTIONS:
            expected = tokenize(caption, length).tolist()
            assert tokenizer.encode(clean_caption(caption)).ids == expected, caption
        plain = [c for c in CAPTIONS if c == clean_caption(c)]
        assert len(plain) >= 12
        assert [e.ids for e in tokenizer.encode_batch(plain)] == tokenize_batch(plain, length).tolist()
        long_ids = tokenizer.encode(" ".join(["word"] * 100)).ids  # cut: EOT forced into the last slot
        assert long_ids == [SOT_ID] + [tokenize("word", 3)[1].item()] * (length - 2) + [EOT_ID]
    # The documented difference: a special spelling right after punctuation.
    odd = "x,<|endoftext|>"
    assert tokenizer.encode(odd).ids != tokenize(odd, CONTEXT).tolist()
    assert tokenizer.encode("x <|endoftext|>").ids == tokenize("x <|endoftext|>", CONTEXT).tolist()


def _standalone_example() -> str:
    """docs/onnx.md's example of an export used without this repository."""
    text = (ROOT / "docs" / "onnx.md").read_text(encoding="utf-8")
    section = text.split("## Using an export without this repository", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_standalone_example_runs_without_the_repository(tiny, tmp_path):
    """docs/onnx.md's code, run by a Python that cannot import this repository (isolated mode, in
    another folder), embeds captions and images like the PyTorch model."""
    root, run, exported, _ = tiny
    shutil.copytree(exported, tmp_path / "exported")
    shutil.copytree(root / "CUHK-PEDES" / "imgs" / "test", tmp_path / "photos")
    paths = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "photos").glob("*.jpg"))
    (tmp_path / "inputs.json").write_text(json.dumps({"captions": CAPTIONS, "paths": paths}))
    probe = (
        "\nimport sys\nassert not any(m in sys.modules for m in ('torch', 'datasets', 'processor'))\n"
        "inputs = json.load(open('inputs.json'))\n"
        "np.save('texts.npy', embed_texts(inputs['captions']))\n"
        "np.save('images.npy', embed_images(inputs['paths']))\n"
    )
    out = run_ok([sys.executable, "-I", "-c", _standalone_example() + probe], cwd=tmp_path, timeout=120)
    assert "photos/" in out.stdout  # the example's own printout: the top images
    loaded = _pytorch(run, root)
    texts = loaded.embed_texts(tokenize_batch(CAPTIONS, CONTEXT))
    transform = build_transform(loaded.image_size)
    images = loaded.embed_images(torch.stack([transform(load_image(tmp_path / p)) for p in paths]))
    ours_texts, ours_images = np.load(tmp_path / "texts.npy"), np.load(tmp_path / "images.npy")
    assert ours_texts.shape == (len(CAPTIONS), 64) and ours_images.shape == (8, 64)
    assert np.abs(ours_texts - texts.numpy()).max() <= TOLERANCE
    assert np.abs(ours_images - images.numpy()).max() <= TOLERANCE
    assert np.allclose(np.linalg.norm(ours_texts, axis=1), 1, atol=1e-5)
    # Different captions give different embeddings (the comparison above is not vacuous).
    assert F.cosine_similarity(texts[0], texts[3], dim=0) < 0.999


@pytest.mark.slow(seconds=15)
def test_latency_benchmark_tiny(tmp_path, capsys):
    output = tmp_path / "latency.json"
    assert onnx_latency.main(["--preset", "tiny", "--repeats", "1", "--output", str(output)]) == 0
    result = json.loads(output.read_text())
    rows = {(row["input"], row["batch"]): row for row in result["rows"]}
    assert sorted(rows) == [("caption", 1), ("caption", 32), ("image", 1), ("image", 32)]
    for row in rows.values():
        assert row["pytorch_ms"] > 0 and row["onnxruntime_ms"] > 0 and row["max_abs_diff"] <= TOLERANCE
        assert row["ratio"] == pytest.approx(row["pytorch_ms"] / row["onnxruntime_ms"])
    assert result["file_bytes"]["text.onnx"] > 49408 * 64 * 4  # the token embedding alone
    assert "| caption |   32  |" in capsys.readouterr().out


def test_search_page_on_onnx_ranks_and_says_the_maps_need_the_weights(tiny):
    """The search page's results on an export are search.py's ranking of it; the map of a result
    is a sentence saying it needs the PyTorch weights."""
    root, _, exported, _ = tiny
    encoders = OnnxEncoders(exported)
    page = split_gallery(root, "CUHK-PEDES", "test", encoders, use_cache=False)
    query = read_dataset(str(root), "CUHK-PEDES").eval_set("test").captions[0]
    results = page_search.search(encoders, page, query, 4)
    assert results.hits == search.rank_gallery(encoders, page.gallery, query, 4)
    own = page.caption_pids[query]  # a caption of the split: every result framed by identity
    assert [("✓" in caption, "✗" in caption) for _, caption in results.items] == [
        (page.image_pids[path] == own, page.image_pids[path] != own) for path, _ in results.hits
    ]
    with pytest.raises(PageMessage, match="need the PyTorch weights .* ONNX export"):
        efa_map(encoders, results, 0, "")
