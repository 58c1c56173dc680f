#!/usr/bin/env bash
# The mini recipe: a synthetic multi-speaker corpus made on the spot (no download),
# then every stage of the toolkit. Usage:
#   ./run.sh [--stage 0] [--stop-stage 6] [--nj 2] [--train-speakers 128] [--test-speakers 24] ...
# Every option of steps/stages.sh can be given too (./run.sh --help lists them).
# The options below are declared here only: stage 0 passes them all to local/data.sh.
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

nj=2
train_speakers=128   # synthetic training speakers
test_speakers=24     # disjoint speakers for the verification trials
dev_speakers=16      # more disjoint speakers: dev trials to fit score calibration on (0: none)
seed=0               # corpus seed
noisy_test=true      # also score the test trials on a noisy, reverberant copy of the test set (test_noisy)
noisy_snr=0:10       # SNR range (dB) of the noise added to test_noisy
recipe_option_names="nj train_speakers test_speakers dev_speakers seed noisy_test noisy_snr"
. steps/recipe_options.sh

# stage 0 (local/data.sh): the corpus and its data dirs, augmentation sources, and the noisy copy of the
# test set (test_noisy) that is scored beside test
test_sets=test; [ "$noisy_test" = true ] && test_sets="test test_noisy"
exec steps/stages.sh \
  --train-set train --test-sets "$test_sets" --ident-sets ident_test --calib-set "$([ "$dev_speakers" -gt 0 ] && echo dev)" \
  --feature-config conf/fbank.yaml --config conf/lstm_contrastive_fast.yaml \
  --nj "$nj" "${stage_args[@]}" -- "${recipe_args[@]}"
