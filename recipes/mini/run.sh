#!/usr/bin/env bash
# The mini recipe: a synthetic multi-speaker corpus made on the spot (no download),
# then every stage of the toolkit. Usage:
#   ./run.sh [--stage 0] [--stop-stage 6] [--nj 2] [--train-speakers 128] [--test-speakers 24] ...
# Every option of steps/stages.sh can be given too (./run.sh --help lists them).
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

nj=2
train_speakers=128   # synthetic training speakers
test_speakers=24     # disjoint speakers for the verification trials
dev_speakers=16      # more disjoint speakers: dev trials to fit score calibration on (0: none)
seed=0               # corpus seed
recipe_option_names="nj train_speakers test_speakers dev_speakers seed"
. steps/recipe_options.sh

exec steps/stages.sh \
  --prep-cmd "python -m local.mini --corpus-dir corpus/mini --data-dir data --nj $nj --seed $seed \
--num-train-speakers $train_speakers --num-test-speakers $test_speakers --num-dev-speakers $dev_speakers" \
  --train-set train --test-sets test --ident-sets ident_test --calib-set "$([ "$dev_speakers" -gt 0 ] && echo dev)" \
  --feature-config conf/fbank.yaml --config conf/lstm_softmax.yaml \
  --nj "$nj" "${stage_args[@]}"
