#!/usr/bin/env bash
# The paper's runs and ablations, one section at a time:
#   bash run.sh paper           # FMFA on the three datasets (paper's settings)
#   bash run.sh authors_code    # the same with the authors' code-at-HEAD values
#   bash run.sh ablation        # CUHK-PEDES loss ablation: the paper's table (4 runs) and 6 extra runs
#   bash run.sh sweeps          # A-SDM factor, EFA margins and threshold
#   bash run.sh finetune        # from Re-ID-domain pre-training (HAM, MLLM4Text-ReID)
# Every run has a stable folder, $RUNS/<dataset>/<run name>: rerunning a section skips the
# finished runs (printing their result), continues an interrupted one from its last.pth and
# starts the rest; a folder holding a run of another config is reported, never overwritten.
# The section ends with a table of its runs (python -m utils.report).
# Environment (paths are relative to where you run this from):
#   DATA_ROOT    datasets folder (CUHK-PEDES/ ICFG-PEDES/ RSTPReid/)      default data
#   CLIP_WEIGHTS OpenAI CLIP ViT-B/16                                      default data/ViT-B-16.pt
#   PRETRAINED   Re-ID pre-trained checkpoints (ham.pth, mllm4text_reid.pth)  default pretrained
#   RUNS         run folders                                               default runs (runs_smoke with SMOKE=1)
#   GPU          sets CUDA_VISIBLE_DEVICES (an existing value is kept when GPU is unset)
#   NPROC=N      each run on N processes with torchrun (data.batch_size stays the global batch)
#   SMOKE=1      every run shrunk to a tiny model on a small synthetic set (CPU, about a minute of
#                CPU time a run: minutes for a section; ablation has 10 runs, sweeps 16)
#   PYTHON       the interpreter (after the quick start: .venv/bin/python,     default python
#                or `source .venv/bin/activate` first)
set -euo pipefail

SECTIONS="paper authors_code ablation sweeps finetune"
here=$(pwd)
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
absolute() { case "$1" in /* | open_clip:* | none) echo "$1" ;; *) echo "$here/$1" ;; esac; }

DATA_ROOT=$(absolute "${DATA_ROOT:-data}")
CLIP_WEIGHTS=$(absolute "${CLIP_WEIGHTS:-data/ViT-B-16.pt}")
PRETRAINED=$(absolute "${PRETRAINED:-pretrained}")
SMOKE=${SMOKE:-0}
if [[ "$SMOKE" == 1 ]]; then RUNS=$(absolute "${RUNS:-runs_smoke}"); else RUNS=$(absolute "${RUNS:-runs}"); fi
NPROC=${NPROC:-1}
PYTHON=${PYTHON:-python}
if [[ -n "${GPU:-}" ]]; then export CUDA_VISIBLE_DEVICES=$GPU; fi
cd "$repo"

# SMOKE=1: the code path of every run at toy size (a synthetic set drawn once under $RUNS).
SMOKE_DATA="$RUNS/smoke_data"
SMOKE_ARGS=(model.pretrain=none model.init_from= model.image_size=[96,32] model.patch_size=16
  model.embed_dim=64 model.vision_width=64 model.vision_layers=1 model.text_width=64 model.text_layers=1
  model.cmt_depth=1 model.context_length=48 data.text_length=48 data.root="$SMOKE_DATA"
  data.dataset=Synthetic-PEDES data.batch_size=16 data.num_workers=0 eval.cross_domain=[]
  solver.epochs=2 solver.warmup_epochs=1 solver.lr=1e-3 solver.eps=1e-8
  train.precision=fp32 train.device=cpu train.log_period=5)

dataset_of() {  # the dataset a config file names
  case "$1" in cuhk*) echo CUHK-PEDES ;; icfg*) echo ICFG-PEDES ;; rstp*) echo RSTPReid ;; *) echo other ;; esac
}

SECTION_RUNS=()
PLANNING=0   # 1: train() only records its command line in PLANNED (the check before any run starts)
PLANNED=()
train() {  # train CONFIG NAME [key=value ...]
  local config=$1 name=$2; shift 2
  local folder="$RUNS/$(dataset_of "$config")/$name"
  local args=(--config "configs/$config" data.root="$DATA_ROOT" model.pretrain="$CLIP_WEIGHTS"
    train.name="$name" train.output_dir="$folder" train.auto_resume=true "$@")
  if [[ "$SMOKE" == 1 ]]; then args+=("${SMOKE_ARGS[@]}"); fi
  if [[ "$PLANNING" == 1 ]]; then PLANNED+=(--run "${args[@]}"); return; fi
  SECTION_RUNS+=("$folder")
  echo "== $folder"
  if [[ "$NPROC" -gt 1 ]]; then
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node="$NPROC" train.py "${args[@]}"
  else
    "$PYTHON" train.py "${args[@]}"
  fi
}

paper() {
  train cuhk_pedes.yaml fmfa_paper
  train icfg_pedes.yaml fmfa_paper
  train rstpreid.yaml fmfa_paper
}

authors_code() {
  train cuhk_pedes_authors_code.yaml fmfa_authors_code
  train icfg_pedes_authors_code.yaml fmfa_authors_code
  train rstpreid_authors_code.yaml fmfa_authors_code
}

ablation() {  # the losses on CUHK-PEDES; its report adds the paper's R1 beside each run (--paper-ablation)
  # Extra rows, not in the paper's table: baselines without ID and IRR, and one loss added at a time.
  train cuhk_pedes.yaml clip_itc loss.names=itc
  train cuhk_pedes.yaml sdm loss.names=sdm
  train cuhk_pedes.yaml asdm loss.names=a-sdm
  train cuhk_pedes.yaml asdm_efa loss.names=a-sdm+efa
  train cuhk_pedes.yaml asdm_irr loss.names=a-sdm+mlm
  train cuhk_pedes.yaml asdm_id loss.names=a-sdm+id
  # The paper's ablation table (ID and IRR on in every row), its CUHK-PEDES R1:
  train cuhk_pedes.yaml sdm_id_irr loss.names=sdm+mlm+id            # SDM        73.45
  train cuhk_pedes.yaml asdm_id_irr loss.names=a-sdm+mlm+id         # A-SDM      74.04
  train cuhk_pedes.yaml sdm_efa_id_irr loss.names=sdm+mlm+id+efa    # SDM + EFA  73.73
  train cuhk_pedes.yaml full loss.names=a-sdm+mlm+id+efa            # A-SDM + EFA (FMFA) 74.16
}

sweeps() {  # one knob at a time around the CUHK-PEDES paper setting
  for factor in 1 5 10 20; do train cuhk_pedes.yaml asdm_factor_$factor asdm.factor=$factor; done
  for margin in 0.05 0.1 0.2 0.5; do train cuhk_pedes.yaml efa_text_margin_$margin efa.text_margin=$margin; done
  for margin in 0.1 0.5 0.9 1.0; do train cuhk_pedes.yaml efa_image_margin_$margin efa.image_margin=$margin; done
  for threshold in 0 0.5 1 2; do train cuhk_pedes.yaml efa_threshold_$threshold efa.threshold=$threshold; done
}

# The fine-tune section's checkpoints, in $PRETRAINED: model.init_from takes them in the authors'
# key layout ({"model": state_dict} with 'base_model.*' keys, as IRRA-based code saves best.pth).
# Where each comes from: docs/training.md, "Fine-tuning from Re-ID pre-training".
FINETUNE_FROM="ham.pth mllm4text_reid.pth"

check_pretrained() {  # every checkpoint the fine-tune section needs, all named at once, before any run
  local missing=() file
  for file in $FINETUNE_FROM; do [[ -f "$PRETRAINED/$file" ]] || missing+=("$PRETRAINED/$file"); done
  if [[ ${#missing[@]} -gt 0 ]]; then
    echo "run.sh finetune: not found: ${missing[*]}. These are Re-ID-domain pre-trained checkpoints" \
      "(ham.pth: HAM; mllm4text_reid.pth: MLLM4Text-ReID) in the authors' key layout; where each comes from:" \
      "docs/training.md, 'Fine-tuning from Re-ID pre-training'. Set PRETRAINED to the folder holding them." >&2
    exit 2
  fi
}

finetune() {  # the paper's "with pre-training" rows: batch 128 from Re-ID-domain checkpoints
  if [[ "$SMOKE" != 1 ]]; then check_pretrained; fi  # SMOKE=1 starts from no checkpoint (model.init_from=)
  for dataset in cuhk_pedes icfg_pedes rstpreid; do
    train $dataset.yaml ham_ft model.init_from="$PRETRAINED/ham.pth" data.batch_size=128
    train $dataset.yaml mllm4text_ft model.init_from="$PRETRAINED/mllm4text_reid.pth" data.batch_size=128
  done
}

section=${1:-}
if [[ -z "$section" || " $SECTIONS " != *" $section "* ]]; then
  echo "usage: bash run.sh SECTION, one of: $SECTIONS${section:+ (not '$section')}" >&2
  exit 2
fi
if [[ "$SMOKE" == 1 ]]; then
  "$PYTHON" -m datasets.synthetic --root "$SMOKE_DATA" --train-ids 24 --val-ids 6 --test-ids 6 \
    --image-size 96 32 > /dev/null
else  # every run's weights, data, config and device, all problems at once, before the first run starts
  PLANNING=1 && "$section" && PLANNING=0
  "$PYTHON" -m processor.section_check --section "$section" --as model.pretrain=CLIP_WEIGHTS \
    --as data.root=DATA_ROOT "${PLANNED[@]}"
fi
"$section"
report_options=()
if [[ "$section" == ablation ]]; then report_options+=(--paper-ablation); fi
"$PYTHON" -m utils.report "${report_options[@]}" "${SECTION_RUNS[@]}"
