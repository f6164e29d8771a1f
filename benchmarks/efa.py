"""EFA forward + backward: this project's blockwise loss against a broadcast implementation.

Both compute docs/method.md's EFA at the paper's shapes (B = 64, L = 77, P = 192,
D = 512, float32, CPU). The broadcast version is the formula written directly, as the
reference does: it materialises the [B, B, P, L] similarity. Each implementation runs
in its own process so that its peak resident memory can be read; the figure reported
is the peak during the first timed call minus the resident memory just before it
(after a small warm-up call); the time is the median over the repeats.

    python -m benchmarks.efa [--batch 64] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import statistics
import time

import torch
import torch.nn.functional as F

from model.objectives import efa_loss, language_grouped_vision


def broadcast_efa(
    text_tokens: torch.Tensor,
    image_tokens: torch.Tensor,
    text_margin: float = 0.1,
    image_margin: float = 0.9,
    lse_lambda: float = 1.0,
) -> torch.Tensor:
    """The EFA formula with the full [B, B, L_x, L_c] broadcast product (the baseline)."""
    patches = image_tokens[:, 1:]
    grouped = language_grouped_vision(text_tokens, patches)

    def pair(x: torch.Tensor, c: torch.Tensor, margin: float) -> torch.Tensor:
        sim = F.normalize(x, dim=-1).unsqueeze(1) @ F.normalize(c, dim=-1).unsqueeze(0).transpose(-2, -1)
        sims = F.normalize(torch.logsumexp(lse_lambda * sim.max(dim=-1)[0], dim=-1) / lse_lambda, dim=-1)
        eye = torch.eye(sims.shape[0], dtype=torch.bool)
        r1 = (sims - sims.diag().unsqueeze(1) + margin).masked_fill(eye, 0)
        r2 = (sims - sims.diag().unsqueeze(0) + margin).masked_fill(eye, 0)
        return torch.logsumexp(r1, dim=0).mean() + torch.logsumexp(r2, dim=0).mean()

    return pair(text_tokens, grouped, text_margin) + pair(patches, grouped, image_margin)


IMPLEMENTATIONS = {"blockwise (ours)": efa_loss, "broadcast (baseline)": broadcast_efa}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _measure(name: str, batch: int, repeats: int, threads: int, queue: mp.Queue) -> None:
    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(batch, 77, 512, generator=gen).requires_grad_()
    image = torch.randn(batch, 193, 512, generator=gen).requires_grad_()
    fn = IMPLEMENTATIONS[name]
    # A small warm-up call first, so the figure excludes one-off library initialisation
    # (kernel code pages, thread pools), which both implementations pay alike.
    fn(text[:4].detach().requires_grad_(), image[:4].detach().requires_grad_()).backward()
    base_rss = _rss_mib()
    times = []
    for step in range(repeats):
        text.grad = image.grad = None
        start = time.perf_counter()
        loss = fn(text, image)
        loss.backward()
        times.append(time.perf_counter() - start)
        if step == 0:  # the peak of one call; later calls only add allocator fragmentation
            peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
    queue.put(
        {
            "loss": loss.item(),
            "grad_text": text.grad.numpy(),
            "grad_image": image.grad.numpy(),
            "seconds": statistics.median(times),
            "peak_mib": peak_rss - base_rss,
        }
    )


def run(name: str, batch: int, repeats: int, threads: int) -> dict:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_measure, args=(name, batch, repeats, threads, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--ours-only",
        action="store_true",
        help="the blockwise loss alone (batches where the baseline would run out of memory)",
    )
    args = parser.parse_args()
    names = list(IMPLEMENTATIONS)[:1] if args.ours_only else list(IMPLEMENTATIONS)
    results = {name: run(name, args.batch, args.repeats, args.threads) for name in names}
    print(
        f"EFA forward+backward, B={args.batch}, L=77, P=192, D=512, float32, CPU, "
        f"{args.threads} threads, median of {args.repeats}"
    )
    print(f"{'implementation':<22}{'time (s)':>10}{'peak mem (MiB)':>16}{'loss':>14}")
    for name, r in results.items():
        print(f"{name:<22}{r['seconds']:>10.3f}{r['peak_mib']:>16.0f}{r['loss']:>14.6f}")
    if args.ours_only:
        return
    ours, base = results["blockwise (ours)"], results["broadcast (baseline)"]
    rel = lambda a, b: float(abs(a - b).max() / abs(b).max())  # noqa: E731
    print(
        f"speed-up: {base['seconds'] / ours['seconds']:.1f}x   "
        f"memory: 1/{base['peak_mib'] / max(ours['peak_mib'], 1e-9):.0f} of the baseline"
    )
    print(
        f"max relative difference: loss {abs(ours['loss'] - base['loss']) / abs(base['loss']):.1e}, "
        f"grad text {rel(ours['grad_text'], base['grad_text']):.1e}, "
        f"grad image {rel(ours['grad_image'], base['grad_image']):.1e}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
