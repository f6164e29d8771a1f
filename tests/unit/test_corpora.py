"""The public pretraining corpora's formats (LUPerson-MLLM, HAM-PEDES, SYNTH-PEDES, MALS), as
their public code reads them, on small fixtures written here: imported, checked, sharded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from data_fixtures import write_image

from dataset_tools.check import main as check_main
from dataset_tools.corpora import import_corpus, main
from dataset_tools.write_shards import write_shards
from datasets.readers import DataError, load_json
from datasets.shards import read_manifest

IMAGES = ["Part1/7/1.jpg", "Part1/7/2.jpg", "Part2/9/1.jpg"]


def write_images(folder: Path, names=IMAGES) -> Path:
    for seed, name in enumerate(names):
        write_image(folder / name, seed)
    return folder


def write_json(path: Path, value) -> Path:
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def luperson_mllm(tmp_path: Path) -> tuple:
    """Two caption files {path: caption}; the second has template residue for one image."""
    images = write_images(tmp_path / "LUPerson-MLLM", ["a.jpg", "b.jpg"])
    static = write_json(tmp_path / "Ts-qwen.json", {"x/a.jpg": "a man in red", "x/b.jpg": "a woman in blue"})
    dynamic = write_json(tmp_path / "Td-qwen.json", {"y/a.jpg": "[description] <img>", "y/b.jpg": "she carries a bag"})
    return [static, dynamic], images


def ham_pedes(tmp_path: Path) -> tuple:
    captions = {name: [f"{name} first", f"{name} second"] for name in IMAGES}
    return [write_json(tmp_path / "caption.json", captions)], write_images(tmp_path / "SYNTH-PEDES")


def synth_pedes(tmp_path: Path) -> tuple:
    records = [
        {"id": int(name.split("/")[1]), "file_path": name, "attributes": ["man"], "captions": [f"{name} text"]}
        | {"prompt_caption": [f"{name} prompt"]}
        for name in IMAGES
    ]
    return [write_json(tmp_path / "synthpedes_dataset.json", records)], write_images(tmp_path / "SYNTH-PEDES")


def mals(tmp_path: Path) -> tuple:
    first = [{"image": IMAGES[0], "caption": "one", "image_id": "p7", "label": [0, 1]}]
    second = [
        {"image": IMAGES[0], "caption": "two", "image_id": "p7"},
        {"image": IMAGES[2], "caption": "three", "image_id": 9},
    ]
    files = [write_json(tmp_path / "g_4x_attrs.json", first), write_json(tmp_path / "g_c_g_a_attrs.json", second)]
    return files, write_images(tmp_path / "MALS", [IMAGES[0], IMAGES[2]])


# format -> (fixture, expected {image: (identity number, captions)})
CASES = {
    "luperson-mllm": (
        luperson_mllm,
        {"a.jpg": (0, ["a man in red"]), "b.jpg": (1, ["a woman in blue", "she carries a bag"])},
    ),
    "ham-pedes": (ham_pedes, {name: (n, [f"{name} first", f"{name} second"]) for n, name in enumerate(IMAGES)}),
    "synth-pedes": (
        synth_pedes,
        {
            IMAGES[0]: (0, [f"{IMAGES[0]} text"]),
            IMAGES[1]: (0, [f"{IMAGES[1]} text"]),
            IMAGES[2]: (1, [f"{IMAGES[2]} text"]),
        },
    ),
    "mals": (mals, {IMAGES[0]: (0, ["one", "two"]), IMAGES[2]: (1, ["three"])}),
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_corpus_imports_checks_and_shards(kind, tmp_path):
    fixture, expected = CASES[kind]
    sources, images = fixture(tmp_path)
    root = tmp_path / "data"
    argv = [kind, *map(str, sources), "--images", str(images), "--root", str(root), "--name", "Corpus"]
    assert main(argv) == 0
    records = load_json(root / "Corpus" / "annotations.json")
    assert {r["file_path"]: (r["id"], r["captions"]) for r in records} == expected
    assert {r["split"] for r in records} == {"train"}
    assert check_main([str(root), "Corpus", "--quiet"]) == 0
    identities = kind in ("synth-pedes", "mals")
    write_shards(root, "Corpus", tmp_path / "shards", shard_size=2, identities=identities)
    manifest = read_manifest(tmp_path / "shards")
    assert manifest.pairs == sum(len(captions) for _, captions in expected.values())
    assert manifest.identities is identities


def test_synth_pedes_prompt_captions_are_optional(tmp_path):
    sources, images = synth_pedes(tmp_path)
    target = import_corpus("synth-pedes", sources, images, tmp_path / "data", "Corpus", prompt_captions=True)
    assert load_json(target)[0]["captions"] == [f"{IMAGES[0]} text", f"{IMAGES[0]} prompt"]


def test_malformed_entries_are_named_and_nothing_is_written(tmp_path):
    sources, images = ham_pedes(tmp_path)
    captions = load_json(sources[0])
    captions[IMAGES[1]] = []
    write_json(sources[0], captions)
    with pytest.raises(DataError, match=rf"(?s)1 problem.*caption.json: key '{IMAGES[1]}': expected a non-empty list"):
        import_corpus("ham-pedes", sources, images, tmp_path / "data", "Corpus")
    assert not (tmp_path / "data" / "Corpus").exists()
    target = import_corpus("ham-pedes", sources, images, tmp_path / "data", "Corpus", skip_bad=True)
    assert [record["file_path"] for record in load_json(target)] == [IMAGES[0], IMAGES[2]]


def test_an_image_without_captions_is_named(tmp_path):
    sources, images = luperson_mllm(tmp_path)
    write_image(images / "c.jpg", 5)
    with pytest.raises(DataError, match=r"c.jpg: no caption in .*Ts-qwen.json"):
        import_corpus("luperson-mllm", sources, images, tmp_path / "data", "Corpus")
