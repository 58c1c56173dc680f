#!/usr/bin/env bash
# TIMIT (LDC93S1, licensed: see README.md): closed-set identification on the 462 training speakers
# (5 sentences train, 3 test, as SincNet) and verification trials on the 168 test speakers.
# Usage:
#   ./run.sh [--corpus-dir DIR] [--include-sa false] [stage options]
# Every option of steps/stages.sh can be given too (./run.sh --help lists them all).
# The options below are declared here only: stage 0 passes them all to local/data.sh.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

corpus_dir=corpus/TIMIT   # holds TRAIN/ and TEST/ (any case)
include_sa=false          # true keeps the two SA sentences every speaker reads
seed=0
nj=2                      # parallel jobs: stage 0's audio-header reads, features, embeddings
recipe_option_names="corpus_dir include_sa seed nj"
. steps/recipe_options.sh

exec steps/stages.sh \
  --train-set train --test-sets test --ident-sets ident_test \
  --feature-config conf/fbank.yaml --config conf/lstm_softmax.yaml \
  --nj "$nj" "${stage_args[@]}" -- "${recipe_args[@]}"
