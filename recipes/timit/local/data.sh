#!/usr/bin/env bash
# Stage 0 of the TIMIT recipe, run by steps/stages.sh from the recipe folder with every option of run.sh
# (their defaults are declared there): data/train, data/ident_test and data/test (with trials).
set -euo pipefail
data_option_names="corpus_dir include_sa seed nj"
. steps/data_options.sh

sa_flag=--no-include-sa; [ "$include_sa" = true ] && sa_flag=--include-sa
spk prepare timit --corpus-dir "$corpus_dir" --data-dir data "$sa_flag" --seed "$seed" --nj "$nj"
