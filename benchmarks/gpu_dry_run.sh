#!/usr/bin/env bash
# The GPU run without a GPU: builds an environment like the lent GPU machine's (its Python
# packages and torch release, transformers 5.17.0 among them, without open_clip_torch, ftfy,
# wcwidth and prettytable), clones this repository's HEAD, fetches those four as wheels with
# benchmarks/gpu_wheels.sh, drops the clone's .git and runs benchmarks/gpu_run.sh in it with its
# CPU preset, as `python3`, the wheels installed the way the GPU machine installs them. Exits
# non-zero unless every section ran and passed.
#
#   bash benchmarks/gpu_dry_run.sh [OUT]        (default OUT: gpu_dry_run/)
#
# Environment: BASE_PYTHON makes the environment (default python3.12 where one runs, the GPU
# machine's Python, else python3); GPU_LIKE_VENV where it lives (default /tmp/fmfa_gpu_like, kept
# between runs: the first run installs about 5 GB; a kept one gets what the list below added
# since); GPU_LIKE_TORCH the torch release (default the GPU machine's, "torch==2.11.0 torchvision==0.26.0").
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-gpu_dry_run}")
venv=${GPU_LIKE_VENV:-/tmp/fmfa_gpu_like}
base=${BASE_PYTHON:-$(python3.12 -c 'import sys; print(sys.executable)' 2> /dev/null || command -v python3)}
read -r -a torch_pins <<< "${GPU_LIKE_TORCH:-torch==2.11.0 torchvision==0.26.0}"
# What the GPU machine has that this project uses (docs/performance.md, "The GPU run"), at its
# versions where they are recorded (/work/.library/device/KINDS.md). transformers matters: open_clip
# imports it when it is there.
machine=(numpy==2.5.2 pillow pyyaml tqdm regex safetensors==0.8.0 timm huggingface_hub==1.33.0 tensorboard
    onnx==1.23.1 onnxscript==0.7.2 onnxruntime==1.30.0 tokenizers==0.23.2 transformers==5.17.0 psutil pytest
    hypothesis matplotlib)
[ -x "$venv/bin/python3" ] || "$base" -m venv "$venv"
wanted="${torch_pins[*]} ${machine[*]}"
if [ "$(cat "$venv/fmfa_packages.txt" 2> /dev/null)" != "$wanted" ]; then
    "$venv/bin/python3" -m pip install -q "${torch_pins[@]}" "${machine[@]}"
    echo "$wanted" > "$venv/fmfa_packages.txt"
fi
for module in open_clip ftfy wcwidth prettytable; do
    if "$venv/bin/python3" -c "import $module" 2> /dev/null; then
        echo "$venv has $module, which the GPU machine lacks: remove it or choose another GPU_LIKE_VENV" >&2
        exit 1
    fi
done
clone=$(mktemp -d)/fmfa
git clone -q . "$clone"
echo "clone of $(git rev-parse --short HEAD) in $clone; environment $venv ($("$venv/bin/python3" -c \
    'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__)'))"
cd "$clone"
PATH="$venv/bin:$PATH" bash benchmarks/gpu_wheels.sh .whl
rm -rf .git  # none travels to the GPU machine: the report takes the commit from .whl/COMMIT
PATH="$venv/bin:$PATH" GPU_RUN_PRESET=cpu GPU_RUN_BUDGET=${GPU_RUN_BUDGET:-1800} bash benchmarks/gpu_run.sh "$out"
failed=$(grep -E '^\| [a-f]\. ' "$out/gpu_run.md" | awk -F' [|] ' '$2 !~ /^0$|expected|CPU preset|[0-9] GPU\)/' || true)
if [ -n "$failed" ]; then
    printf 'sections that did not pass:\n%s\n' "$failed" >&2
    exit 1
fi
echo "every section passed: $out/gpu_run.md"
