#!/usr/bin/env bash
# The GPU run: one command for the day a CUDA GPU is lent (docs/performance.md, "The GPU run").
#
#   bash benchmarks/gpu_run.sh OUT
#
# Sections, each independent (a failure is recorded with its exit code and the next runs):
#   a. the CUDA tests (pytest -k cuda);
#   b. the paper-size training step in pure_fp16, without and with grad checkpointing: samples/s,
#      peak GiB allocated and reserved, MFU against the datasheet and the measured bf16 rates
#      (model FLOPs without the recomputed forward), the config's own optimizer, 20 timed steps;
#   c. evaluation at CUHK-PEDES test size (6,156 captions x 3,074 images), model only and with
#      JPEG decoding by the loader's workers: seconds, peak GiB allocated and reserved;
#   d. a short real run: Synthetic-PEDES drawn at 384 x 128, configs/cuhk_pedes.yaml with
#      model.pretrain=none in pure_fp16 with the config's workers (fewer where /dev/shm is small)
#      and pinned memory, killed after epoch 1 and resumed to epoch 2, then test.py on the run folder;
#   e. while the time budget lasts: one epoch with train.deterministic=true, one with
#      train.compile=true and data.drop_last=true (one batch size: one compilation; recompiles and
#      graph breaks logged), then the compiled step (train_step --compile);
#   f. with two GPUs: the 2-process (NCCL) step against the 1-process and float64 steps.
# It stops before any section, with one line, when open_clip, ftfy, wcwidth or prettytable is
# still missing after the install, when open_clip does not import, or when nvidia-smi lists a GPU
# that torch does not see (utils/gpu.py says why).
# OUT receives at most 8 files, none in a subfolder: gpu_run.md (the report: commit, machine, free
# space, versions, each section's command, exit code, seconds and output tail), gpu_run.log
# (everything printed) and the short run's config.yaml, train.log, metrics.jsonl and test.json.
# Data and checkpoints stay in a work folder outside OUT (GPU_RUN_WORK, default a new temporary folder).
#
# Environment: PYTHON (default python3); GPU_RUN_PRESET=gpu|cpu (default gpu when torch sees a
# GPU; cpu = tiny sizes, what CI and benchmarks/gpu_dry_run.sh run); GPU_RUN_BUDGET seconds for
# the whole run (default 500: inside the 540 s call docs/performance.md plans); GPU_RUN_WHEELS, a
# folder of .whl files installed with pip --no-index --no-deps into the work folder when a package
# is missing (default .whl, what benchmarks/gpu_wheels.sh fills; its COMMIT file names the commit
# where no .git travels); GPU_RUN_SECTIONS, the letters of the sections to run (default abcdef).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: bash benchmarks/gpu_run.sh OUT}
py=${PYTHON:-python3}
budget=${GPU_RUN_BUDGET:-500}
wheels=${GPU_RUN_WHEELS:-.whl}
sections=${GPU_RUN_SECTIONS:-abcdef}
work=${GPU_RUN_WORK:-$(mktemp -d)}
mkdir -p "$out" "$work"
out=$(cd "$out" && pwd)
report="$out/gpu_run.md"
log="$out/gpu_run.log"
: > "$log"
export PYTHONUNBUFFERED=1

# stop LINE: the run cannot work; LINE is the report, and on stderr.
stop() {
    printf '# GPU run, %s\n\nnot run: %s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" "$1" > "$report"
    echo "gpu_run.sh: not run: $1" >&2
    exit 2
}

# The packages the GPU machine lacks, from wheels carried with the tree (it reaches no registry).
# Looked up here without importing; open_clip is imported once, for the versions line.
needed=(open_clip ftfy wcwidth prettytable)
lookup='import importlib.util as u, sys
def found(name):
    try:
        return u.find_spec(name) is not None
    except (ImportError, ValueError):
        return False
print(" ".join(name for name in sys.argv[1:] if not found(name)))'
missing=$("$py" -c "$lookup" "${needed[@]}" 2>> "$log") || stop "$py does not run (PYTHON=$py)"
if [ -n "$missing" ] && compgen -G "$wheels/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$work/site" \
        "$wheels"/*.whl >> "$log" 2>&1
    export PYTHONPATH="$work/site${PYTHONPATH:+:$PYTHONPATH}"
    missing=$("$py" -c "$lookup" "${needed[@]}" 2>> "$log")
    [ -z "$missing" ] || stop "$missing still missing after installing $wheels/*.whl (gpu_run.log has pip's output)"
fi
[ -z "$missing" ] || stop "$missing missing and no $wheels/*.whl to install: run 'bash benchmarks/gpu_wheels.sh \
$wheels' where pip reaches PyPI and carry $wheels with the tree"

# One interpreter start: the real import of open_clip (it imports transformers where that is
# installed), the versions line and the GPU count.
versions=$("$py" -c "import sys, torch, open_clip
from importlib import metadata
def version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return 'none'
print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda,
      '| cuDNN', torch.backends.cudnn.version(), '| open_clip', open_clip.__version__,
      *(f'| {name} {version(name)}' for name in ('transformers', 'timm', 'huggingface_hub')),
      '| GPUs', torch.cuda.device_count())
" 2>&1) || stop "import open_clip failed: $(tail -n 1 <<< "$versions")"
versions=$(tail -n 1 <<< "$versions")
gpus=$(sed -n 's/.*| GPUs \([0-9]*\)$/\1/p' <<< "$versions")
listed=$(nvidia-smi -L 2> /dev/null | grep -c '^GPU ')
if [ "${listed:-0}" -gt 0 ] && [ "${gpus:-0}" -eq 0 ] && [ "${GPU_RUN_PRESET:-}" != cpu ]; then
    why=$("$py" -c 'from utils.gpu import missing_gpu_reason; print(missing_gpu_reason())' 2>&1 | tail -n 1)
    stop "nvidia-smi lists $listed GPU(s) but torch sees none: $why (GPU_RUN_PRESET=cpu runs the CPU preset anyway)"
fi
preset=${GPU_RUN_PRESET:-$([ "${gpus:-0}" -gt 0 ] && echo gpu || echo cpu)}

scale=1  # section time limits are the GPU's; the CPU preset gets 3x (tiny sizes, but a CPU)
if [ "$preset" = gpu ]; then
    step_args=(--preset paper --steps 20 --repeats 3 --warmup 5)
    eval_args=(--preset paper --repeats 2)
    draw_args=(--train-ids 300 --val-ids 2 --test-ids 50 --image-size 384 128 --workers 16)
    batch=64 height=384 width=128 workers=8 test_ids=50
    run_args=(model.pretrain=none)
else
    step_args=(--preset tiny --steps 2 --repeats 1 --warmup 1)
    eval_args=(--preset tiny --repeats 1 --images 60 --captions 120)
    draw_args=(--train-ids 12 --val-ids 2 --test-ids 4 --image-size 96 32 --workers 2)
    batch=16 height=96 width=32 workers=2 test_ids=4
    scale=3
    run_args=(model.pretrain=none model.image_size=[96,32] model.patch_size=16 model.embed_dim=64
        model.vision_width=64 model.vision_layers=1 model.text_width=64 model.text_layers=1
        model.cmt_depth=1 model.context_length=77 data.batch_size=16)
fi

# Room to work. Each loader worker holds 2 prefetched float32 training batches in /dev/shm, and the
# evaluation the test split's images (about 3 per identity); a worker more than fits dies of a bus error.
kib() { df -Pk "$1" 2> /dev/null | awk 'NR == 2 {print $4}'; }
batch_kib=$((batch * 3 * height * width * 4 / 1024))
test_kib=$((test_ids * 3 * 3 * height * width * 4 / 1024))
shm_kib=$(kib /dev/shm)
shm_kib=${shm_kib:-0}
need_kib=$((workers * 2 * batch_kib + test_kib + 65536))
shm_note="/dev/shm: $((shm_kib / 1024)) MiB free; the short run's loaders need ~$((need_kib / 1024)) MiB with"
shm_note+=" data.num_workers=$workers"
if [ "$shm_kib" -lt "$need_kib" ]; then
    fit=$(((shm_kib - test_kib - 65536) / (2 * batch_kib)))
    [ "$fit" -lt 0 ] && fit=0
    shm_note+=": too little, sections c to e run with data.num_workers=$fit"
    workers=$fit
fi
run_args=(--config configs/cuhk_pedes.yaml "${run_args[@]}" data.num_workers="$workers" data.root="$work/data"
    data.dataset=Synthetic-PEDES train.precision=pure_fp16 solver.epochs=2 solver.warmup_epochs=1
    train.log_period=5 train.auto_resume=true)
eval_args+=(--jpeg --workers "$workers")
work_kib=$(kib "$work")
work_note="work folder $work: $((${work_kib:-0} / 1048576)) GiB free; each of the 3 runs writes ~1.5 GB of"
work_note+=" checkpoints at the paper's size"

if commit=$(git rev-parse --short HEAD 2> /dev/null); then
    [ -n "$(git status --porcelain --untracked-files=no 2> /dev/null)" ] && commit+=" (uncommitted changes)"
elif [ -f "$wheels/COMMIT" ]; then
    commit="$(head -n 1 "$wheels/COMMIT") (from $wheels/COMMIT: no .git here)"
else
    commit="unknown (no .git, no $wheels/COMMIT)"
fi
{
    printf '# GPU run, %s\n\ncommit %s, preset %s, budget %s s\n\n```\n' "$(date -u '+%Y-%m-%d %H:%M UTC')" \
        "$commit" "$preset" "$budget"
    if command -v nvidia-smi > /dev/null; then
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1
    else
        echo "no nvidia-smi"
    fi
    printf '%s\n' "$versions"
    df -h /dev/shm /tmp "$work" 2>&1
    printf '%s\n%s\n' "$shm_note" "$work_note"
    printf '```\n\n| section | exit | seconds |\n|---|---|---|\n'
} > "$report"
details=$(mktemp)

# skip NAME WHY: a row for a section that is not run.
skip() {
    printf '| %s | not run (%s) | 0 |\n' "$1" "$2" >> "$report"
}

# section NAME EXPECTED_EXIT LIMIT_S COMMAND...: runs COMMAND with a time limit (at most what the
# budget has left), its output to the log and its tail to the report; never stops the script.
section() {
    local name=$1 expected=$2 limit=$3 left started status first
    shift 3
    [[ $sections == *"${name:0:1}"* ]] || { skip "$name" "GPU_RUN_SECTIONS=$sections"; return 0; }
    limit=$((limit * scale))
    left=$((budget - SECONDS))
    [ "$limit" -gt "$left" ] && limit=$left
    [ "$limit" -ge 20 ] || { skip "$name" "time budget spent"; return 0; }
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
draw="d. draw Synthetic-PEDES"
[[ $sections == *e* && $sections != *d* ]] && draw="e. draw Synthetic-PEDES (section d's data)"
section "$draw" 0 90 "$py" -m datasets.synthetic --root "$work/data" "${draw_args[@]}"
section "d. run, killed after epoch 1" 137 150 env FMFA_FAULT_KILL_AFTER_EPOCH=1 PYTHONPATH=".:${PYTHONPATH:-}" \
    "$py" tests/fault_injection.py "${run_args[@]}" train.output_dir="$run"
section "d. run, resumed to epoch 2" 0 120 "$py" train.py "${run_args[@]}" train.output_dir="$run"
section "d. test.py on the run" 0 60 "$py" test.py "$run" --output "$out/test.json"
for file in config.yaml train.log metrics.jsonl; do
    [ -f "$run/$file" ] && cp "$run/$file" "$out/$file"
done
one_epoch=(solver.epochs=1 solver.warmup_epochs=0)
section "e. run with train.deterministic=true" 0 90 "$py" train.py "${run_args[@]}" "${one_epoch[@]}" \
    train.deterministic=true train.output_dir="$work/run_deterministic"
if [ "$preset" = gpu ]; then
    section "e. run with train.compile=true" 0 200 env TORCH_LOGS=recompiles,graph_breaks "$py" train.py \
        "${run_args[@]}" "${one_epoch[@]}" train.compile=true data.drop_last=true train.output_dir="$work/run_compile"
    section "e. step pure_fp16, torch.compile" 0 150 env TORCH_LOGS=recompiles "$py" -m benchmarks.train_step \
        --modes pure_fp16 --compile "${step_args[@]}"
else  # inductor's C++ compile of this model ran past 10 minutes on a busy 2-core CPU (dry run)
    for name in "e. run with train.compile=true" "e. step pure_fp16, torch.compile"; do
        skip "$name" "CPU preset: compiling for the CPU takes over 10 min"
    done
fi
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
else
    skip "f. 2-GPU equality (NCCL)" "${gpus:-0} GPU"
fi
cat "$details" >> "$report"
rm -f "$details"
echo "report: $report ($SECONDS s)"
