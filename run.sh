#!/usr/bin/env bash
# The paper's runs and ablations. Edit the variables, then e.g.
#   bash run.sh paper              # FMFA on the three datasets (paper's settings)
#   bash run.sh authors_code       # the same with the authors' code-at-HEAD values
#   bash run.sh ablation           # CUHK-PEDES loss ablation (paper table 3)
#   bash run.sh sweeps             # A-SDM factor, EFA margins and threshold
#   bash run.sh finetune           # from Re-ID-domain pre-training (HAM, NAM / MLLM4Text-ReID)
# Every run writes runs/<dataset>/<time>_<name>/ (see README "Training").
set -euo pipefail

DATA_ROOT=${DATA_ROOT:-data}                  # holds CUHK-PEDES/ ICFG-PEDES/ RSTPReid/
CLIP_WEIGHTS=${CLIP_WEIGHTS:-data/ViT-B-16.pt}  # OpenAI CLIP ViT-B/16
PRETRAINED=${PRETRAINED:-pretrained}          # Re-ID pre-trained checkpoints (reference key layout)
export CUDA_VISIBLE_DEVICES=${GPU:-0}
PYTHON=${PYTHON:-python}

train() {  # train CONFIG NAME [key=value ...]
  local config=$1 name=$2; shift 2
  "$PYTHON" train.py --config "configs/$config" data.root="$DATA_ROOT" model.pretrain="$CLIP_WEIGHTS" \
    train.name="$name" "$@"
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

ablation() {  # paper table 3 on CUHK-PEDES; ID and IRR (mlm) stay on except for the baselines
  train cuhk_pedes.yaml clip_itc loss.names=itc
  train cuhk_pedes.yaml sdm loss.names=sdm
  train cuhk_pedes.yaml asdm loss.names=a-sdm
  train cuhk_pedes.yaml asdm_efa loss.names=a-sdm+efa
  train cuhk_pedes.yaml asdm_irr loss.names=a-sdm+mlm
  train cuhk_pedes.yaml asdm_id loss.names=a-sdm+id
  train cuhk_pedes.yaml sdm_id_irr loss.names=sdm+mlm+id
  train cuhk_pedes.yaml asdm_id_irr loss.names=a-sdm+mlm+id
  train cuhk_pedes.yaml sdm_efa_id_irr loss.names=sdm+mlm+id+efa
  train cuhk_pedes.yaml full loss.names=a-sdm+mlm+id+efa
}

sweeps() {  # one knob at a time around the CUHK-PEDES paper setting
  for factor in 1 5 10 20; do train cuhk_pedes.yaml asdm_factor_$factor asdm.factor=$factor; done
  for margin in 0.05 0.1 0.2 0.5; do train cuhk_pedes.yaml efa_text_margin_$margin efa.text_margin=$margin; done
  for margin in 0.1 0.5 0.9 1.0; do train cuhk_pedes.yaml efa_image_margin_$margin efa.image_margin=$margin; done
  for threshold in 0 0.5 1 2; do train cuhk_pedes.yaml efa_threshold_$threshold efa.threshold=$threshold; done
}

finetune() {  # the paper's "with pre-training" rows: batch 128 from Re-ID-domain checkpoints
  for dataset in cuhk_pedes icfg_pedes rstpreid; do
    train $dataset.yaml ham_ft model.init_from="$PRETRAINED/ham.pth" data.batch_size=128
    train $dataset.yaml mllm4text_ft model.init_from="$PRETRAINED/mllm4text_reid.pth" data.batch_size=128
  done
}

"${1:-paper}"
