#!/usr/bin/env bash
# VoxCeleb: train on VoxCeleb2 dev and test on the distributed VoxCeleb1 trial lists (verification),
# or train and test on VoxCeleb1's identification split (--protocol identification).
# The audio is given out on request (see README.md); the lists are downloaded when missing.
# Usage:
#   ./run.sh [--vox1-dir DIR] [--vox2-dir DIR] [--trial-lists "vox1_o vox1_e vox1_h"] [stage options]
#   ./run.sh --protocol identification [--vox1-dir DIR]
# Every option of steps/stages.sh can be given too (./run.sh --help lists them all).
# The options below are declared here only: stage 0 passes them all to local/data.sh.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

vox1_dir=corpus/voxceleb1   # holds wav/<spk>/<video>/<n>.wav
vox2_dir=corpus/voxceleb2   # holds dev/aac/<spk>/<video>/<n>.m4a (decoded through ffmpeg)
protocol=verification       # verification or identification
trial_lists=vox1_o          # any of vox1_o vox1_e vox1_h vox1_o_orig (Vox1-E/H: train on vox2_dev)
train_on=vox2_dev           # vox2_dev, vox1_dev or both (verification only)
download=true               # download missing trial lists / iden_split.txt (small text files)
nj=2                        # parallel jobs: stage 0's audio-header reads, features, embeddings
recipe_option_names="vox1_dir vox2_dir protocol trial_lists train_on download nj"
. steps/recipe_options.sh

case "$protocol" in
  verification) sets=(--train-set train --test-sets "${trial_lists//,/ }" --ident-sets "") ;;
  identification) sets=(--train-set iden_train --test-sets "" --ident-sets iden_test) ;;
  *) echo "$0: --protocol is verification or identification, not '$protocol'" >&2; exit 1 ;;
esac
exec steps/stages.sh "${sets[@]}" \
  --feature-config conf/fbank.yaml --config conf/lstm_softmax.yaml \
  --nj "$nj" "${stage_args[@]}" -- "${recipe_args[@]}"
