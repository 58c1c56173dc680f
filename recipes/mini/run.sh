#!/usr/bin/env bash
# The mini recipe: a synthetic multi-speaker corpus made on the spot (no download),
# then every stage of the toolkit. Usage: ./run.sh [--stage 0] [--stop-stage 6] [--nj 2] ...
# Any option of steps/stages.sh can be given here (run ./run.sh --help).
set -euo pipefail
cd "$(dirname "$0")"
. ./path.sh

nj=2
exec steps/stages.sh \
  --nj "$nj" \
  --prep-cmd "python -m local.mini --corpus-dir corpus/mini --data-dir data --nj $nj" \
  --train-set train --test-sets test --ident-sets ident_test \
  --feature-config conf/fbank.yaml --config conf/lstm_softmax.yaml \
  "$@"
