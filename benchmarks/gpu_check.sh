#!/usr/bin/env bash
# The GPU check: one command for the day a CUDA GPU is lent (about 3-5 minutes on one
# H200-class GPU, under 8). It measures
#   1. the paper-size training step in pure_fp16 (the authors' mode): samples/s, step time,
#      peak memory, MFU; then the same with model.grad_checkpointing=true;
#   2. the evaluation at CUHK-PEDES test size (3,074 images + 6,156 captions), amp_bf16 and pure_fp16;
#   3. with two visible GPUs: one training step with 2 processes (torchrun, NCCL) against the
#      one-process step on the same global batch (largest relative error of losses and gradients),
#      and both against the same step in float64;
# and writes everything, with the GPU, driver and versions, to OUT/gpu_check.md.
# On a machine without a GPU it runs the same scripts with their tiny preset (CI runs it so).
#
#   bash benchmarks/gpu_check.sh [OUT]          (default OUT: gpu_check/; PYTHON=... picks the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu_check}
py=${PYTHON:-python}
mkdir -p "$out"
report="$out/gpu_check.md"
gpus=$("$py" -c "import torch; print(torch.cuda.device_count())")

if [ "$gpus" -gt 0 ]; then
    step_args=(--preset paper --steps 20 --repeats 3 --warmup 5)
    eval_args=(--preset paper --repeats 2)
else
    step_args=(--preset tiny --steps 2 --repeats 1 --warmup 1)
    eval_args=(--preset tiny --repeats 1 --images 60 --captions 120)
fi

# Runs "$@", its output to the terminal and, in a fenced block under a heading, to the report.
section() {
    local title=$1
    shift
    printf '\n## %s\n\n`%s`\n\n```\n' "$title" "$*" >> "$report"
    "$@" 2>&1 | tee -a "$report"
    printf '```\n' >> "$report"
}

{
    printf '# GPU check, %s\n\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'commit %s\n\n```\n' "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    if [ "$gpus" -gt 0 ]; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 || true
    else
        echo "no CUDA GPU: tiny presets on the CPU"
    fi
    "$py" -c "import torch, open_clip, sys; print('python', sys.version.split()[0], '| torch', torch.__version__,
'| CUDA', torch.version.cuda, '| cuDNN', torch.backends.cudnn.version(), '| open_clip', open_clip.__version__)"
    printf '```\n'
} > "$report"

section "Training step, pure_fp16" "$py" -m benchmarks.train_step --modes pure_fp16 "${step_args[@]}"
section "Training step, pure_fp16 + grad checkpointing" \
    "$py" -m benchmarks.train_step --modes pure_fp16 --grad-checkpointing "${step_args[@]}"
section "Evaluation, amp_bf16" "$py" -m benchmarks.eval_speed --mode amp_bf16 "${eval_args[@]}"
section "Evaluation, pure_fp16" "$py" -m benchmarks.eval_speed --mode pure_fp16 "${eval_args[@]}"

if [ "$gpus" -ge 2 ]; then
    data=$(mktemp -d)
    trap 'rm -rf "$data"' EXIT
    "$py" -m datasets.synthetic --root "$data" --train-ids 40 --val-ids 1 --test-ids 1 --image-size 96 32 > /dev/null
    on_gpu=(data.dataset=Synthetic-PEDES train.device=cuda)
    "$py" -m benchmarks.ddp_equality step "$data" "$out/ddp_one.pt" "${on_gpu[@]}"
    "$py" -m torch.distributed.run --standalone --nproc_per_node=2 -m benchmarks.ddp_equality step "$data" \
        "$out/ddp_two.pt" "${on_gpu[@]}"
    "$py" -m benchmarks.ddp_equality step "$data" "$out/ddp_float64.pt" float64 "${on_gpu[@]}"
    section "2 processes (NCCL) against 1, one step, fp32 without TF32" \
        "$py" -m benchmarks.ddp_equality compare "$out/ddp_one.pt" "$out/ddp_two.pt"
    section "1 process against the float64 step (float32 rounding of one process)" \
        "$py" -m benchmarks.ddp_equality compare "$out/ddp_float64.pt" "$out/ddp_one.pt"
    section "2 processes against the float64 step (as close as 1 process: the same training)" \
        "$py" -m benchmarks.ddp_equality compare "$out/ddp_float64.pt" "$out/ddp_two.pt"
else
    printf '\n## 2 processes (NCCL) against 1\n\nnot run: %s GPU(s) visible (tests/test_ddp.py checks gloo on the CPU)\n' \
        "$gpus" >> "$report"
fi
echo "report: $report"
