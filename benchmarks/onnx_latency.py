"""Embedding latency on this CPU: PyTorch eager against onnxruntime, for the exported encoders.

    python -m benchmarks.onnx_latency [--preset paper|tiny] [--repeats 5] [--threads N] [--output F.json]

Builds the preset's model (random init: the weights do not change the cost; ``paper`` is
ViT-B/16 at 384 x 128 with the 12-layer text tower, 77 tokens), exports its two encoders with
export_onnx.py's code (float32, opset 18), checks that both engines give the same embeddings
on the timed inputs, then times captions (77 token ids, 32 of them used) and images at
batch 1 and 32. Each repeat runs both engines on the same input, in alternating order, after
one warm-up call each; the table gives medians and the ratio PyTorch / onnxruntime (> 1:
onnxruntime is faster). Both engines get the same number of threads (``--threads``, default
torch's); onnxruntime's idle threads sleep rather than spin, so that they do not slow the
PyTorch call that follows. Also reports the size of the exported files.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
from prettytable import PrettyTable, TableStyle

from benchmarks.presets import CAPTION_TOKENS, cuhk_id_outputs, preset_config, random_captions
from model.build import build_model
from serving.onnx_export import ImageEmbedder, TextEmbedder, export_encoders
from serving.onnx_model import IMAGE_INPUT, TEXT_INPUT, make_session, run_session
from serving.onnx_tokenizer import build_hf_tokenizer
from utils.cli import describe
from utils.io import write_text_atomic

logger = logging.getLogger("onnx_latency")
BATCHES = (1, 32)


def _seconds(function: Callable[[], object]) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def interleaved(first: Callable[[], object], second: Callable[[], object], repeats: int) -> List[List[float]]:
    """Seconds per call of each function over ``repeats`` rounds, after one warm-up call of each;
    the two alternate which runs first from round to round."""
    first(), second()
    times: List[List[float]] = [[], []]
    for round_ in range(repeats):
        order = (0, 1) if round_ % 2 == 0 else (1, 0)
        for which in order:
            times[which].append(_seconds((first, second)[which]))
    return times


def measure(preset: str, repeats: int, threads: int) -> Dict:
    """Export the preset's encoders and time both engines; the rows of the table and the sizes."""
    torch.set_num_threads(threads)
    cfg = preset_config(preset)
    model = build_model(cfg, cuhk_id_outputs(cfg)).eval()
    start = time.perf_counter()
    image_onnx, text_onnx = export_encoders(model, cfg.model.image_size)
    export_seconds = time.perf_counter() - start
    sessions = {"image": make_session(image_onnx, threads), "text": make_session(text_onnx, threads)}
    modules = {"image": ImageEmbedder(model).eval(), "text": TextEmbedder(model).eval()}
    names = {"image": IMAGE_INPUT, "text": TEXT_INPUT}
    gen = torch.Generator().manual_seed(0)
    rows = []
    for kind in ("text", "image"):
        for batch in BATCHES:
            inputs = (
                random_captions(batch, cfg.model.context_length, gen)
                if kind == "text"
                else torch.randn(batch, 3, *cfg.model.image_size, generator=gen)
            )
            module, session, name = modules[kind], sessions[kind], names[kind]

            def eager(module=module, inputs=inputs):
                with torch.inference_mode():
                    return module(inputs)

            def onnx(session=session, name=name, inputs=inputs):
                return run_session(session, name, inputs)

            difference = float((eager() - onnx()).abs().max())
            torch_times, onnx_times = interleaved(eager, onnx, repeats)
            torch_ms, onnx_ms = 1e3 * statistics.median(torch_times), 1e3 * statistics.median(onnx_times)
            rows.append(
                {
                    "input": "caption" if kind == "text" else "image",
                    "batch": batch,
                    "pytorch_ms": torch_ms,
                    "onnxruntime_ms": onnx_ms,
                    "ratio": torch_ms / onnx_ms,
                    "max_abs_diff": difference,
                }
            )
            logger.info("%s batch %d: PyTorch %.1f ms, onnxruntime %.1f ms", kind, batch, torch_ms, onnx_ms)
    sizes = {
        "image.onnx": len(image_onnx),
        "text.onnx": len(text_onnx),
        "tokenizer.json": len(build_hf_tokenizer(cfg.model.context_length).to_str().encode("utf-8")),
    }
    return {
        "preset": preset,
        "image_size": list(cfg.model.image_size),
        "context_length": cfg.model.context_length,
        "caption_tokens": CAPTION_TOKENS,
        "threads": threads,
        "repeats": repeats,
        "export_seconds": export_seconds,
        "rows": rows,
        "file_bytes": sizes,
    }


def report(result: Dict) -> str:
    """The latency table (markdown) and the file sizes."""
    table = PrettyTable(
        ["input", "batch", "PyTorch eager (ms)", "onnxruntime (ms)", "PyTorch / onnxruntime", "max abs diff"]
    )
    table.set_style(TableStyle.MARKDOWN)
    for row in result["rows"]:
        table.add_row(
            [
                row["input"],
                row["batch"],
                f"{row['pytorch_ms']:.1f}",
                f"{row['onnxruntime_ms']:.1f}",
                f"{row['ratio']:.2f}x",
                f"{row['max_abs_diff']:.1e}",
            ]
        )
    sizes = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in result["file_bytes"].items())
    return (
        f"preset {result['preset']}: images {result['image_size'][0]} x {result['image_size'][1]}, captions of "
        f"{result['context_length']} ids; {result['threads']} threads each; median of {result['repeats']}\n"
        f"{table.get_string()}\nexported files: {sizes} (export took {result['export_seconds']:.0f} s)"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=describe(__doc__))
    parser.add_argument("--preset", choices=("paper", "tiny"), default="paper")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--output", type=Path, default=None, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.threads < 1:
        parser.error(f"--repeats and --threads must be >= 1 (got {args.repeats}, {args.threads})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    result = measure(args.preset, args.repeats, args.threads)
    print(report(result))
    if args.output:
        write_text_atomic(args.output, json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
