#!/usr/bin/env bash
# The GPU run: one command for the day a CUDA GPU is lent (docs/performance.md, "The GPU run").
#
#   bash benchmarks/gpu_run.sh OUT
#
# Sections, each independent (a failure is recorded with its exit code and the next runs):
#   a. the CUDA tests (pytest -k cuda);
#   b. the paper-size training step in pure_fp16, without and with grad checkpointing: samples/s,
#      peak GiB, MFU (model FLOPs without the recomputed forward), the config's own optimizer;
#   c. evaluation at CUHK-PEDES test size (6,156 captions x 3,074 images): seconds, peak GiB;
#   d. a short real run: Synthetic-PEDES drawn at 384 x 128, configs/cuhk_pedes.yaml with
#      model.pretrain=none in pure_fp16 with the config's workers and pinned memory, killed after
#      epoch 1 and resumed to epoch 2, then test.py on the run folder;
#   e. while the time budget lasts: the same run with train.compile=true, then train.deterministic=true;
#   f. with two GPUs: the 2-process (NCCL) step against the 1-process and float64 steps.
# OUT receives at most 8 files, none in a subfolder: gpu_run.md (the report: machine, versions,
# each section's command, exit code, seconds and output tail), gpu_run.log (everything printed)
# and the short run's config.yaml, train.log, metrics.jsonl and test.json. Data and checkpoints
# stay in a work folder outside OUT (GPU_RUN_WORK, default a new temporary folder).
#
# Environment: PYTHON (default python3); GPU_RUN_PRESET=gpu|cpu (default gpu when torch sees a
# GPU; cpu = tiny sizes, what CI and benchmarks/gpu_dry_run.sh run); GPU_RUN_BUDGET seconds for
# the whole run (default 470: the lent machine's 8 minutes); GPU_RUN_WHEELS, a folder of .whl
# files installed with pip --no-index --no-deps into the work folder when open_clip is missing
# (default .whl, what benchmarks/gpu_wheels.sh fills); GPU_RUN_SECTIONS, the letters of the
# sections to run (default abcdef).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu_run.sh OUT}
py=${PYTHON:-python3}
budget=${GPU_RUN_BUDGET:-470}
wheels=${GPU_RUN_WHEELS:-.whl}
sections=${GPU_RUN_SECTIONS:-abcdef}
work=${GPU_RUN_WORK:-$(mktemp -d)}
mkdir -p "$out" "$work"
out=$(cd "$out" && pwd)
report="$out/gpu_run.md"
log="$out/gpu_run.log"
: > "$log"
export PYTHONUNBUFFERED=1

# The missing packages, from wheels carried with the tree (the GPU machine reaches no registry).
# Looked up, not imported: importing open_clip takes about 5 s, and every section imports it.
found='import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in sys.argv[1:]))'
if ! "$py" -c "$found" open_clip ftfy wcwidth prettytable 2> /dev/null && compgen -G "$wheels/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" \
        "$wheels"/*.whl >> "$log" 2>&1
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
fi

# One interpreter start for the versions line of the report and the GPU count; open_clip's
# version from its package metadata (the same as open_clip.__version__), without the import.
versions=$("$py" -c "import sys, torch
from importlib import metadata
try:
    open_clip_version = metadata.version('open_clip_torch')
except metadata.PackageNotFoundError as error:
    open_clip_version = f'missing ({error})'
print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| cuDNN', torch.backends.cudnn.version(), '| open_clip', open_clip_version, '| GPUs', torch.cuda.device_count())
" 2>&1)
gpus=$(sed -n 's/.*| GPUs \([0-9]*\)$/\1/p' <<< "$versions")
preset=${GPU_RUN_PRESET:-$([ "${gpus:-0}" -gt 0 ] && echo gpu || echo cpu)}
scale=1  # section time limits are the GPU's; the CPU preset gets 3x (tiny sizes, but a CPU)
if [ "$preset" = gpu ]; then
    step_args=(--preset paper --steps 10 --repeats 3 --warmup 5)
    eval_args=(--preset paper --repeats 2)
    draw_args=(--train-ids 300 --val-ids 2 --test-ids 50 --image-size 384 128 --workers 16)
    run_args=(model.pretrain=none)
else
    step_args=(--preset tiny --steps 2 --repeats 1 --warmup 1)
    eval_args=(--preset tiny --repeats 1 --images 60 --captions 120)
    draw_args=(--train-ids 12 --val-ids 2 --test-ids 4 --image-size 96 32 --workers 2)
    scale=3
    run_args=(model.pretrain=none model.image_size=[96,32] model.patch_size=16 model.embed_dim=64
        model.vision_width=64 model.vision_layers=1 model.text_width=64 model.text_layers=1
        model.cmt_depth=1 model.context_length=77 data.batch_size=16 data.num_workers=2)
fi
run_args=(--config configs/cuhk_pedes.yaml "${run_args[@]}" data.root="$work/data" data.dataset=Synthetic-PEDES
    train.precision=pure_fp16 solver.epochs=2 solver.warmup_epochs=1 train.log_period=5 train.auto_resume=true)

{
    printf '# GPU run, %s\n\ncommit %s, preset %s, budget %s s\n\n```\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" \
        "$(git rev-parse --short HEAD 2> /dev/null || echo unknown)" "$preset" "$budget"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    else
        echo "no nvidia-smi"
    fi
    printf '%s\n' "$versions"
    printf '```\n\n| section | exit | seconds |\n|---|---|---|\n'
} > "$report"
details=$(mktemp)

# section NAME EXPECTED_EXIT LIMIT_S COMMAND...: runs COMMAND with a time limit (at most what the
# budget has left), its output to the log and its tail to the report; never stops the script.
section() {
    local name=$1 expected=$2 limit=$3 left started status first
    shift 3
    if [[ $sections != *"${name:0:1}"* ]]; then
        printf '| %s | not run (GPU_RUN_SECTIONS=%s) | 0 |\n' "$name" "$sections" >> "$report"
        return 0
    fi
    limit=$((limit * scale))
    left=$((budget - SECONDS))
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 20 ]; then
        printf '| %s | not run (time budget spent) | 0 |\n' "$name" >> "$report"
        return 0
    fi
    printf '\n===== %s: %s\n' "$name" "$*" >> "$log"
    first=$(($(wc -l < "$log") + 1))
    started=$SECONDS
    timeout --kill-after=10 "$limit" "$@" >> "$log" 2>&1 < /dev/null
    status=$?
    local verdict=$status
    [ "$status" -eq "$expected" ] && [ "$expected" -ne 0 ] && verdict="$status (expected)"
    [ "$status" -eq 124 ] && verdict="124 (over ${limit} s)"
    printf '| %s | %s | %s |\n' "$name" "$verdict" "$((SECONDS - started))" >> "$report"
    {
        printf '\n## %s\n\n`%s`\n\n```\n' "$name" "$*"
        tail -n "+$first" "$log" | tail -n 40
        printf '```\n'
    } >> "$details"
    return 0
}

run="$work/run"
section "a. CUDA tests" 0 150 "$py" -m pytest -q -p no:cacheprovider -o addopts=-ra -k cuda tests
section "b. step pure_fp16" 0 120 "$py" -m benchmarks.train_step --modes pure_fp16 "${step_args[@]}"
section "b. step pure_fp16 + grad checkpointing" 0 120 \
    "$py" -m benchmarks.train_step --modes pure_fp16 --grad-checkpointing "${step_args[@]}"
section "c. evaluation pure_fp16" 0 120 "$py" -m benchmarks.eval_speed --mode pure_fp16 "${eval_args[@]}"
section "d. draw Synthetic-PEDES" 0 90 "$py" -m datasets.synthetic --root "$work/data" "${draw_args[@]}"
section "d. run, killed after epoch 1" 137 150 env FMFA_FAULT_KILL_AFTER_EPOCH=1 PYTHONPATH=".:${PYTHONPATH:-}" \
    "$py" tests/fault_injection.py "${run_args[@]}" train.output_dir="$run"
section "d. run, resumed to epoch 2" 0 120 "$py" train.py "${run_args[@]}" train.output_dir="$run"
section "d. test.py on the run" 0 60 "$py" test.py "$run" --output "$out/test.json"
for file in config.yaml train.log metrics.jsonl; do
    [ -f "$run/$file" ] && cp "$run/$file" "$out/$file"
done
if [ "$preset" = gpu ]; then
    section "e. run with train.compile=true" 0 200 "$py" train.py "${run_args[@]}" solver.epochs=1 \
        solver.warmup_epochs=0 train.compile=true train.output_dir="$work/run_compile"
else  # inductor's C++ compile of this model ran past 10 minutes on a busy 2-core CPU (dry run)
    printf '| e. run with train.compile=true | not run (CPU preset: compiling for the CPU takes over 10 min) | 0 |\n' \
        >> "$report"
fi
section "e. run with train.deterministic=true" 0 90 "$py" train.py "${run_args[@]}" solver.epochs=1 \
    solver.warmup_epochs=0 train.deterministic=true train.output_dir="$work/run_deterministic"
if [ "${gpus:-0}" -ge 2 ]; then
    on_gpu=(data.dataset=Synthetic-PEDES train.device=cuda)
    section "f. 1-process step" 0 60 "$py" -m benchmarks.ddp_equality step "$work/data" "$work/one.pt" "${on_gpu[@]}"
    section "f. 2-process step (NCCL)" 0 90 "$py" -m torch.distributed.run --standalone --nproc_per_node=2 \
        -m benchmarks.ddp_equality step "$work/data" "$work/two.pt" "${on_gpu[@]}"
    section "f. float64 step" 0 60 "$py" -m benchmarks.ddp_equality step "$work/data" "$work/f64.pt" float64 \
        "${on_gpu[@]}"
    section "f. 2 processes against 1" 0 30 "$py" -m benchmarks.ddp_equality compare "$work/one.pt" "$work/two.pt"
    section "f. 2 processes against float64" 0 30 "$py" -m benchmarks.ddp_equality compare "$work/f64.pt" \
        "$work/two.pt"
fi
cat "$details" >> "$report"
rm -f "$details"
echo "report: $report ($SECONDS s)"
