#!/usr/bin/env bash
# Common Voice: speakers from client_id, one or more languages; verification trials on held-out
# speakers and closed-set identification on held-out clips of the training speakers.
# Usage:
#   ./run.sh [--corpus-dir DIR] [--languages "en de"] [--min-utts 5] [stage options]
# Every option of steps/stages.sh can be given too (./run.sh --help lists them all).
# The options below are declared here only: stage 0 passes them all to local/data.sh.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

corpus_dir=corpus/cv-corpus   # a release folder, holding <lang>/validated.tsv and <lang>/clips/
languages=en                  # language folders, space- or comma-separated
min_utts=5                    # leave out speakers with fewer clips
max_utts=200                  # keep at most this many clips per speaker (0: all)
num_test_speakers=100         # speakers held out of training for the trials
ident_utts=2                  # clips per training speaker held out for identification
seed=0
recipe_option_names="corpus_dir languages min_utts max_utts num_test_speakers ident_utts seed"
. steps/recipe_options.sh

exec steps/stages.sh \
  --train-set train --test-sets test --ident-sets ident_test \
  --feature-config conf/fbank.yaml --config conf/lstm_softmax.yaml \
  "${stage_args[@]}" -- "${recipe_args[@]}"
