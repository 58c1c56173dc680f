#!/usr/bin/env bash
# Stage 0 of the mini recipe, run by steps/stages.sh from the recipe folder with every option of run.sh
# (their defaults are declared there): ./run.sh --stage 0 --stop-stage 0 [--train-speakers 128] ...
#   - the synthetic corpus (corpus/mini, skipped when complete) and its data dirs data/{train,ident_test,test,dev};
#   - built-in noise, music and room impulse responses for augmentation (data/aug_sources: conf/*_aug.yaml);
#   - with --noisy-test true, the noisy test condition data/test_noisy: every test utterance reverberated and
#     mixed with noise at --noisy-snr dB, from sources made with another seed (so none was heard in training),
#     keeping the utterance ids so that the same trials apply.
set -euo pipefail
data_option_names="nj train_speakers test_speakers dev_speakers seed noisy_test noisy_snr"
. steps/data_options.sh

spk prepare mini --corpus-dir corpus/mini --data-dir data --nj "$nj" --seed "$seed" \
  --num-train-speakers "$train_speakers" --num-test-speakers "$test_speakers" --num-dev-speakers "$dev_speakers"
spk augment sources --out data/aug_sources --seed 0 --speech-from data/train
if [ "$noisy_test" = true ]; then
  spk augment sources --out data/aug_sources_test --seed 1
  spk augment data --src data/test --out data/test_noisy --kinds reverb,noise --sources data/aug_sources_test \
    --snr-noise "$noisy_snr" --keep-ids --seed 1 --nj "$nj"
fi
