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
seed=0               # corpus seed
passthrough=()
while [ $# -gt 0 ]; do
  case "$1" in
    --nj) nj=$2; passthrough+=(--nj "$2"); shift 2 ;;
    --train-speakers) train_speakers=$2; shift 2 ;;
    --test-speakers) test_speakers=$2; shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    --help|-h)
      echo "mini recipe options: --train-speakers $train_speakers --test-speakers $test_speakers --seed $seed --nj $nj" >&2
      passthrough+=("$1"); shift ;;
    *) passthrough+=("$1"); shift ;;
  esac
done

exec steps/stages.sh \
  --prep-cmd "python -m local.mini --corpus-dir corpus/mini --data-dir data --nj $nj --seed $seed \
--num-train-speakers $train_speakers --num-test-speakers $test_speakers" \
  --train-set train --test-sets test --ident-sets ident_test \
  --feature-config conf/fbank.yaml --config conf/lstm_softmax.yaml \
  "${passthrough[@]}"
