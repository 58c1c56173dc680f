#!/usr/bin/env bash
# Stage 0 of the LibriSpeech recipe, run by steps/stages.sh from the recipe folder with every option of
# run.sh (their defaults are declared there): optionally download the subsets, then data/train,
# data/ident_test and data/test (with trials).
set -euo pipefail
data_option_names="corpus_dir subsets download segment_length min_segment_length num_test_speakers train_seconds seed nj"
. steps/data_options.sh

download_opts=(--no-download); [ "$download" = true ] && download_opts=(--download --download-dir downloads)
if [ -z "$corpus_dir" ]; then  # the excerpt in ../shared/data, or corpus/ for a download
  corpus_dir=../../../shared/data; [ "$download" = true ] && corpus_dir=corpus
fi
spk prepare librispeech --corpus-dir "$corpus_dir" --subsets "$subsets" --data-dir data "${download_opts[@]}" \
  --segment-length "$segment_length" --min-segment-length "$min_segment_length" \
  --num-test-speakers "$num_test_speakers" --train-seconds-per-speaker "$train_seconds" --seed "$seed" --nj "$nj"
