#!/usr/bin/env bash
# LibriSpeech: verification trials on held-out speakers and closed-set identification with a fixed
# amount of training speech per speaker (SincNet's protocol). The defaults run on the 251-speaker
# excerpt of train-clean-100 in ../shared/data (one utterance per speaker, cut into 3 s segments).
# Usage:
#   ./run.sh [--corpus-dir DIR] [--subsets "train-clean-100 test-clean"] [--download true] ...
# Every option of steps/stages.sh can be given too (./run.sh --help lists them all).
# The options below are declared here only: stage 0 passes them all to local/data.sh.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

corpus_dir=                      # holds LibriSpeech/<subset>/; default: the excerpt in ../shared/data,
                                 # or corpus/ with --download true (archives go to downloads/)
subsets=train-clean-100          # any of the openslr.org/12 subsets, space- or comma-separated
download=false                   # true: download and extract the subsets first (resumable, md5-checked)
segment_length=3                 # cut files into segments of this many seconds (0: whole files)
min_segment_length=2             # a shorter last piece joins the one before; shorter files are left out
num_test_speakers=50             # at least this many speakers are kept out of training for the trials
train_seconds=9                  # training speech per training speaker; the rest is for identification
seed=0
nj=2                             # parallel jobs: stage 0's audio-header reads, features, embeddings
recipe_option_names="corpus_dir subsets download segment_length min_segment_length num_test_speakers train_seconds seed nj"
. steps/recipe_options.sh

exec steps/stages.sh \
  --train-set train --test-sets test --ident-sets ident_test \
  --feature-config conf/fbank_global.yaml --config conf/lstm_contrastive_long.yaml --valid-per-spk 0 \
  --nj "$nj" "${stage_args[@]}" -- "${recipe_args[@]}"
