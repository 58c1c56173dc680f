#!/usr/bin/env bash
# Stage 0 of the VoxCeleb recipe, run by steps/stages.sh from the recipe folder with every option of run.sh
# (their defaults are declared there): optionally download the trial lists, then data/train and one data dir
# per trial list (verification), or data/iden_{train,dev,test} (identification).
set -euo pipefail
data_option_names="vox1_dir vox2_dir protocol trial_lists train_on download nj"
. steps/data_options.sh

download_flag=--no-download; [ "$download" = true ] && download_flag=--download
case "$protocol" in
  verification) protocol_opts=(--trial-lists "${trial_lists//,/ }" --train-on "$train_on" --no-iden) ;;
  identification) protocol_opts=(--trial-lists '' --train-on '' --iden) ;;
  *) echo "$0: --protocol is verification or identification, not '$protocol'" >&2; exit 1 ;;
esac
spk prepare voxceleb --vox1-dir "$vox1_dir" --vox2-dir "$vox2_dir" --data-dir data "$download_flag" \
  "${protocol_opts[@]}" --nj "$nj"
