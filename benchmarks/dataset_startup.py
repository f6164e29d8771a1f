"""Start-up of the training dataset at corpus scale: the time to the constructed training
loader and its resident memory, JSON + folder (the file loader) against manifest + shards
(the streaming loader), for each ``--records`` count.

    python -m benchmarks.dataset_startup --records 1000000 5000000 --out DIR [--memory-limit-gb 12] [--cpu-limit-s 0]

For each count it writes, under ``--out``, a corpus of generated records in the common record
format (``CORPUS/annotations.json``, ``{"id", "file_path", "captions", "split"}``, two
captions each, an empty ``imgs/`` folder) and a shard folder describing the same records
(``manifest.json`` as ``datasets.write_shards`` writes it, and sparse shard files of the
sizes it gives: at construction the streaming loader reads the manifest and checks each
shard's size, nothing inside). No image is written: neither loader opens or stats an image
before training reads it (the file loader checks only that ``imgs/`` exists, in preflight).

Each loader is built by ``datasets.build.build_train_loader`` in a fresh subprocess (no
workers, 384 x 128, the default 77 tokens), which reports the seconds, wall and CPU, from its
imports to the constructed loader and its peak resident memory (``ru_maxrss``); a third subprocess
that only imports the same modules gives the baseline subtracted from both. A subprocess
building a loader whose resident memory passes ``--memory-limit-gb`` (a safeguard for a shared
machine) or whose CPU time passes ``--cpu-limit-s`` is stopped: its row then gives lower bounds
("> "), the times and the resident memory it had reached. The CPU seconds are the figure to
compare on a loaded machine: the wall seconds grow with the other processes' load.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence, Tuple

from prettytable import PrettyTable

from datasets.shards import FORMAT, MANIFEST, VERSION, shard_name
from utils.cli import describe

CORPUS = "StartupCorpus"
SHARD_SIZE = 1000  # images per shard, as write_shards' default
IMAGE_BYTES = 4096  # nominal bytes per image in the sparse shards
HAIR = ("short black", "long brown", "short grey", "blond", "long black", "dark brown")
UPPER = ("t-shirt", "long-sleeved shirt", "jacket", "coat", "hoodie", "sweater")
LOWER = ("trousers", "jeans", "shorts", "skirt", "pants")
COLOURS = ("red", "blue", "black", "white", "green", "grey", "yellow", "purple", "brown", "orange")
CARRIES = ("a backpack", "a handbag", "a shoulder bag", "nothing in his hands", "a phone")


def caption(index: int) -> str:
    """A person description of about 25 words, varied by ``index`` (CUHK-PEDES-like text)."""
    pick = [index // step for step in (1, 7, 11, 13, 17, 19, 23)]
    return (
        f"The person has {HAIR[pick[0] % len(HAIR)]} hair and wears a {COLOURS[pick[1] % 10]} "
        f"{UPPER[pick[2] % len(UPPER)]} with {COLOURS[pick[3] % 10]} {LOWER[pick[4] % len(LOWER)]} "
        f"and {COLOURS[pick[5] % 10]} shoes. The person is walking and carries {CARRIES[pick[6] % len(CARRIES)]}."
    )


def records(count: int) -> Iterator[dict]:
    """``count`` training records, two images per identity, two captions each."""
    for index in range(count):
        captions = [caption(2 * index), caption(2 * index + 1)]
        yield {"id": index // 2, "file_path": f"train/{index:09d}.jpg", "captions": captions, "split": "train"}


def write_annotations(folder: Path, count: int) -> Path:
    """``folder/annotations.json`` with ``count`` records, written record by record."""
    (folder / "imgs").mkdir(parents=True, exist_ok=True)
    path = folder / "annotations.json"
    with open(path, "w", encoding="utf-8") as handle:
        handle.write("[")
        for index, record in enumerate(records(count)):
            handle.write(("," if index else "") + json.dumps(record))
        handle.write("]")
    return path


def write_manifest(folder: Path, count: int) -> Path:
    """A shard folder of ``count`` records as write_shards lays it out, the shards sparse."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for number, start in enumerate(range(0, count, SHARD_SIZE)):
        images = min(SHARD_SIZE, count - start)
        name, size = shard_name(number), images * (IMAGE_BYTES + 2048) + 1024
        with open(folder / name, "wb") as handle:
            handle.truncate(size)
        ids = sorted({index // 2 for index in range(start, start + images)})
        entry = {"name": name, "bytes": size, "sha256": "0" * 64, "captions": [2] * images, "ids": ids}
        shards.append({**entry, "plan": "0" * 64})
    source = {"root": str(folder.parent), "name": CORPUS, "annotation": "generated", "split": "train"}
    manifest = {"format": FORMAT, "version": VERSION, "source": source, "identities": True}
    manifest.update(shards=shards, skipped=[])
    path = folder / MANIFEST
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return path


def child(kind: str, root: str, shards: str) -> Dict[str, float]:
    """Run in the measuring subprocess: import, build ``kind``'s training loader, report."""
    started, cpu = time.perf_counter(), time.process_time()
    from configs.defaults import Config, DataConfig, LossConfig, ModelConfig
    from datasets.build import build_train_loader

    imported, imported_cpu = time.perf_counter(), time.process_time()
    if kind != "baseline":
        data = DataConfig(
            root=root, dataset=CORPUS, num_workers=0, pin_memory=False, shards=shards if kind == "shards" else ""
        )
        cfg = Config(model=ModelConfig(image_size=[384, 128]), loss=LossConfig(names=["sdm", "mlm"]), data=data)
        loader, _ = build_train_loader(cfg)
        assert len(loader.dataset) > 0
    built, built_cpu = time.perf_counter(), time.process_time()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {
        "imports_s": imported - started,
        "imports_cpu_s": imported_cpu - cpu,
        "build_s": built - imported,
        "build_cpu_s": built_cpu - imported_cpu,
        "rss_mb": rss_mb,
    }


def usage(pid: int) -> Tuple[float, float]:
    """(resident MB, CPU seconds) of process ``pid`` so far, from /proc; zeros once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as handle:
            line = next((line for line in handle if line.startswith("VmRSS:")), "VmRSS: 0 kB")
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            ticks = handle.read().rpartition(")")[2].split()[11:13]  # utime, stime
        return int(line.split()[1]) / 1024, sum(map(int, ticks)) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return 0.0, 0.0


def measure(kind: str, root: Path, shards: Path, limits: Tuple[float, float], base: Optional[Dict] = None) -> Dict:
    """``child(kind)`` in a fresh interpreter. One that passes ``limits`` (resident MB, CPU
    seconds) is stopped: then its figures are lower bounds (``"stopped"`` says which limit),
    the times less those of ``base``'s imports."""
    command = [sys.executable, "-m", "benchmarks.dataset_startup", "--child", kind, "--out", str(root)]
    command += ["--shards", str(shards)]
    started, peak = time.perf_counter(), 0.0
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    while process.poll() is None:
        resident, cpu = usage(process.pid)
        peak = max(peak, resident)
        if peak > limits[0] or cpu > limits[1]:
            process.kill()
            process.wait()
            stopped, elapsed = ("memory" if peak > limits[0] else "CPU time"), time.perf_counter() - started
            print(f"  {kind}: stopped by the {stopped} limit after {elapsed:.0f} s ({cpu:.0f} s CPU), {peak:.0f} MB")
            base = base or {"imports_s": 0.0, "imports_cpu_s": 0.0}
            cpu, elapsed = cpu - base["imports_cpu_s"], elapsed - base["imports_s"]
            return {"build_s": elapsed, "build_cpu_s": cpu, "rss_mb": peak, "stopped": stopped}
        time.sleep(0.2)
    out = process.stdout.read()
    if process.returncode:
        raise RuntimeError(f"{kind} subprocess failed with exit status {process.returncode}: {out}")
    return json.loads(out.strip().splitlines()[-1])


def figure(result: Dict, key: str, base: float = 0.0) -> str:
    return ("> " if result.get("stopped") else "") + f"{max(result[key] - base, 0):.2f}"


def ratio(files: Dict, shards: Dict, key: str, base: float) -> str:
    above = "> " if files.get("stopped") else ""
    return f"{above}{max(files[key] - base, 0) / max(shards[key] - base, 1e-3):.0f}x"


def run(counts: Sequence[int], out: Path, limits: Tuple[float, float]) -> PrettyTable:
    """The table: for each count, both loaders' start-up (seconds) and memory above the baseline."""
    columns = ["records", "loader", "input MB", "start-up s", "start-up CPU s", "peak RSS MB", "files / shards"]
    table = PrettyTable(columns)
    base = measure("baseline", out, out, (float("inf"), float("inf")))
    imports = f"{base['imports_s']:.1f} s ({base['imports_cpu_s']:.1f} s CPU)"
    print(f"baseline (imports only): {imports}, {base['rss_mb']:.0f} MB peak RSS", flush=True)
    for count in counts:
        root = out / str(count)
        annotation = write_annotations(root / CORPUS, count)
        manifest = write_manifest(root / "shards", count)
        files = measure("files", root, root / "shards", limits, base)
        shards = measure("shards", root, root / "shards", limits, base)
        sizes = {path: path.stat().st_size / 1e6 for path in (annotation, manifest)}
        times = f"CPU {ratio(files, shards, 'build_cpu_s', 0)}"
        memory = f"memory {ratio(files, shards, 'rss_mb', base['rss_mb'])}"
        for name, result, size, compared in (
            ("JSON + folder", files, sizes[annotation], times),
            ("manifest + shards", shards, sizes[manifest], memory),
        ):
            cells = [figure(result, "build_s"), figure(result, "build_cpu_s"), figure(result, "rss_mb", base["rss_mb"])]
            table.add_row([f"{count:,}", name, f"{size:.1f}", *cells, compared])
        print(f"{count:,} records measured; load average {os.getloadavg()[0]:.1f}\n{table}", flush=True)
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--records", type=int, nargs="+", default=[1_000_000, 5_000_000], help="corpus sizes")
    parser.add_argument("--out", type=Path, required=True, help="folder for the generated corpora")
    parser.add_argument("--memory-limit-gb", type=float, default=12.0, help="stop a loader resident above this")
    parser.add_argument("--cpu-limit-s", type=float, default=0, help="stop a loader using more CPU time (0: none)")
    parser.add_argument("--child", choices=("baseline", "files", "shards"), help=argparse.SUPPRESS)
    parser.add_argument("--shards", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, str(args.out), args.shards)))
        return 0
    if min(args.records) < 1:
        parser.error("--records must be >= 1")
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start")
    limits = (args.memory_limit_gb * 1024, args.cpu_limit_s or float("inf"))
    run(args.records, args.out, limits)  # prints the table after each count
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
