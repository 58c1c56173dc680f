#!/usr/bin/env bash
# Stage 0 of the Common Voice recipe, run by steps/stages.sh from the recipe folder with every option of
# run.sh (their defaults are declared there): data/train, data/ident_test and data/test (with trials).
set -euo pipefail
data_option_names="corpus_dir languages min_utts max_utts num_test_speakers ident_utts seed"
. steps/data_options.sh

spk prepare commonvoice --corpus-dir "$corpus_dir" --languages "$languages" --data-dir data \
  --min-utts-per-speaker "$min_utts" --max-utts-per-speaker "$max_utts" --num-test-speakers "$num_test_speakers" \
  --ident-utts-per-speaker "$ident_utts" --seed "$seed"
