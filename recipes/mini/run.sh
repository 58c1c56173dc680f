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
noisy_test=true      # also score the test trials on a noisy, reverberant copy of the test set (test_noisy)
noisy_snr=0:10       # SNR range (dB) of the noise added to test_noisy
recipe_option_names="nj train_speakers test_speakers dev_speakers seed noisy_test noisy_snr"
. steps/recipe_options.sh

# stage 0: the corpus and its data dirs; built-in noise, music and room impulse responses (data/aug_sources,
# for augmentation: conf/*_aug.yaml); and the noisy test condition: every test utterance reverberated and
# mixed with noise at $noisy_snr dB, from sources made with another seed (so none was heard in training),
# keeping the utterance ids so that the same trials apply
prep="python -m local.mini --corpus-dir corpus/mini --data-dir data --nj $nj --seed $seed \
--num-train-speakers $train_speakers --num-test-speakers $test_speakers --num-dev-speakers $dev_speakers \
&& spk augment sources --out data/aug_sources --seed 0 --speech-from data/train"
test_sets=test
if [ "$noisy_test" = true ]; then
  prep="$prep && spk augment sources --out data/aug_sources_test --seed 1 \
&& spk augment data --src data/test --out data/test_noisy --kinds reverb,noise --sources data/aug_sources_test \
--snr-noise $noisy_snr --keep-ids --seed 1 --nj $nj"
  test_sets="test test_noisy"
fi

exec steps/stages.sh \
  --prep-cmd "$prep" \
  --train-set train --test-sets "$test_sets" --ident-sets ident_test --calib-set "$([ "$dev_speakers" -gt 0 ] && echo dev)" \
  --feature-config conf/fbank.yaml --config conf/lstm_softmax.yaml \
  --nj "$nj" "${stage_args[@]}"
