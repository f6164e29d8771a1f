#!/usr/bin/env bash
# Wheels of the packages the lent GPU machine lacks (open_clip_torch, ftfy, wcwidth, prettytable),
# at the versions requirements.txt pins, for its Python 3.12 on manylinux x86-64, into DIR
# (default .whl, git-ignored). benchmarks/gpu_run.sh installs them there with
# pip --no-index --no-deps (that machine reaches no registry; it has everything else they need).
# DIR/COMMIT records this checkout's commit (no .git travels to that machine): the report names it.
#
#   bash benchmarks/gpu_wheels.sh [DIR]          (PYTHON=... picks the pip; default python3)
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-.whl}
py=${PYTHON:-python3}
pins=()
for name in open_clip_torch ftfy wcwidth prettytable; do
    pin=$(grep -iE "^${name}==[^ #]+" -o requirements.txt || true)
    if [ -z "$pin" ]; then
        echo "requirements.txt pins no version of $name (expected a line $name==VERSION)" >&2
        exit 1
    fi
    pins+=("$pin")
done
mkdir -p "$dir"
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$dir" "${pins[@]}"
commit=$(git rev-parse --short HEAD 2> /dev/null || echo unknown)
[ -n "$(git status --porcelain --untracked-files=no 2> /dev/null)" ] && commit="$commit (uncommitted changes)"
echo "$commit, wheels fetched $(date -u '+%Y-%m-%d %H:%M UTC')" > "$dir/COMMIT"
echo "wheels for the GPU machine in $dir: ${pins[*]}; $(cat "$dir/COMMIT")"
