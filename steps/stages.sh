#!/usr/bin/env bash
# The stages shared by every recipe (see docs/architecture.md). A recipe's run.sh only sets options:
#   0 data prep   1 features   2 training examples   3 training   4 embeddings
#   5 scoring (verification trials, closed-set identification)   6 report
# Run from the recipe folder:
#   steps/stages.sh [--option value ...] [-- RECIPE OPTIONS]
# Stage 0 runs the recipe's own local/data.sh with the options after "--" (run.sh passes all of its
# own there). Each stage can be rerun alone; finished expensive work is skipped (features, a trained
# model) unless --force true. Starting at stage 3 (--stage 3) retrains even when a trained model exists.
set -euo pipefail

# Where parallel jobs run (Kaldi's cmd.sh): the recipe's cmd.sh sets cpu_cmd and gpu_cmd, and --cmd
# and --gpu-cmd override them: "local" (processes here) or "slurm [sbatch options]" (job arrays).
cpu_cmd=local
gpu_cmd=local
[ -f ./cmd.sh ] && . ./cmd.sh

stage=0                      # first stage to run
stop_stage=6                 # last stage to run
nj=2                         # parallel jobs for data prep, features, augmentation and embeddings
cmd=$cpu_cmd                 # job command of those jobs: local, or "slurm [sbatch options]" (default: cmd.sh's cpu_cmd)
# gpu_cmd                    # job command of GPU work: stage 4 with --device cuda (default: cmd.sh's gpu_cmd)
device=cpu                   # cpu, cuda or auto (training and embeddings)
train_set=train              # data/<train_set>: training speakers
test_sets=test               # data/<set> with a trials file, for verification
ident_sets=                  # data/<set> of held-out utterances of training speakers
feature_config=conf/fbank.yaml
compress_feats=false         # stages 1-2: store features with Kaldi's 8-bit compression (true: about 1/4 of the disk)
train_feats=dump             # stages 1-2: dump the training set's features, or only its lengths (lengths: for configs with on_the_fly_features: true)
config=conf/lstm_softmax.yaml  # experiment config; exp/<tag> with tag = its file name
tag=                         # override the experiment tag
train_overrides=             # stage 3: config overrides, e.g. "epochs=30 chunk_frames=[150,250]" (spk train --set; no spaces in values)
min_frames=200               # stage 2: drop shorter utterances
min_utts=2                   # stage 2: drop speakers with fewer utterances
valid_per_spk=1              # stage 2: utterances per speaker held out for validation accuracy
valid_speakers=0             # stage 2: speakers held out of training for the validation EER
speed_perturb=false          # stage 2: add 0.9x and 1.1x speed copies as new speakers (spk augment speed)
aug_offline=                 # stage 2: Kaldi-v2 offline augmented copies of these kinds (reverb,noise,music,babble)
aug_sources=                 # stage 2: noise/music/rirs/speech sources for aug_offline (spk augment sources, or MUSAN prep)
aug_num=0                    # stage 2: keep this many of the augmented copies (0: all)
embed_chunk=0                # stage 4: embed in chunks of this many seconds, averaged (0: whole utterances)
embed_overlap=0              # stage 4: overlap of those chunks in seconds
backend=cosine               # stage 5 scoring backend: cosine or euclidean
center=false                 # stage 5: subtract the training set's mean embedding first
score_norm=none              # stage 5: also score with none|znorm|tnorm|snorm|asnorm (cohort: training speakers)
top_n=300                    # stage 5: cohort members per side for asnorm
calib_set=                   # stage 5: data/<set> with trials to fit score calibration on (a dev set)
baseline=true                # also score the no-training MFCC-mean baseline
force=false                  # redo finished work
threads=0                    # torch threads for training (0: $SPK_NUM_THREADS, $OMP_NUM_THREADS or the cores this process may use)
train_nproc=1                # stage 3: >1 trains with torchrun DDP, this many processes (GPUs) per node
train_nodes=1                # stage 3: nodes to train on, one Slurm job over them (needs a slurm job command)
spk_option_names="stage stop_stage nj cmd gpu_cmd device train_set test_sets ident_sets feature_config compress_feats train_feats config tag train_overrides min_frames min_utts valid_per_spk valid_speakers speed_perturb aug_offline aug_sources aug_num embed_chunk embed_overlap backend center score_norm top_n calib_set baseline force threads train_nproc train_nodes"

command_line="$0 $*"
data_opts=()  # what follows a lone "--": the options of local/data.sh
for ((i = 1; i <= $#; i++)); do
  if [ "${!i}" = -- ]; then data_opts=("${@:i+1}"); set -- "${@:1:i-1}"; break; fi
done
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

log() { echo "$(date '+%Y-%m-%d %H:%M:%S') [stages.sh${current_stage:+ stage $current_stage}] $*" >&2; }
run() { log "+ $*"; "$@"; }

current_stage=
log "command line: $command_line"
[ -n "$tag" ] || tag=$(basename "${config%.*}")
exp=exp/$tag
# the training examples come from the training set, or its speed-perturbed and/or augmented version (stage 2)
egs_source=$train_set
[ "$speed_perturb" = true ] && egs_source=${egs_source}_sp
[ -n "$aug_offline" ] && egs_source=${egs_source}_combined
egs=data/${egs_source}_egs
force_flag=(); [ "$force" = true ] && force_flag=(--force)
cmd_opts=(--cmd "$cmd")  # each parallel step of stages 1 and 2 through the CPU job command
export SPK_CMD=$cmd      # for local/data.sh (stage 0)
case "$compress_feats" in
  true) compress_flag=(--compress) ;;
  false) compress_flag=() ;;
  *) log "error: --compress-feats takes true or false, not '$compress_feats'"; exit 1 ;;
esac
case "$train_feats" in
  dump) train_feats_flag=() ;;
  lengths) train_feats_flag=(--lengths-only) ;;
  *) log "error: --train-feats takes dump or lengths, not '$train_feats'"; exit 1 ;;
esac
for f in "$feature_config" "$config"; do
  [ -f "$f" ] || { log "error: config file $f does not exist (see conf/)"; exit 1; }
done
case "$stage$stop_stage" in *[!0-9]*) log "error: --stage and --stop-stage take numbers 0-6"; exit 1;; esac
start_time=$(date +%s)

stage_active() { [ "$stage" -le "$1" ] && [ "$stop_stage" -ge "$1" ]; }

current_stage=0
if stage_active 0; then
  [ -x local/data.sh ] || { log "error: stage 0 runs the recipe's local/data.sh, and $PWD has none"; exit 1; }
  log "stage 0: data preparation"
  run local/data.sh "${data_opts[@]}"
fi

current_stage=1
if stage_active 1; then
  log "stage 1: features ($feature_config)"
  feature_sets=(data/$train_set)
  if [ "$train_feats" = lengths ]; then  # the training set's lengths only: its features are made on the fly
    run spk features --config "$feature_config" --feat-dir "features/$(basename "${feature_config%.*}")" \
      --nj "$nj" "${cmd_opts[@]}" --log-dir exp/make_features/log "${force_flag[@]}" --lengths-only data/$train_set
    feature_sets=()
  fi
  for s in $test_sets $ident_sets $calib_set; do feature_sets+=(data/$s); done
  [ ${#feature_sets[@]} -gt 0 ] && run spk features --config "$feature_config" \
    --feat-dir "features/$(basename "${feature_config%.*}")" --nj "$nj" "${cmd_opts[@]}" \
    --log-dir exp/make_features/log "${force_flag[@]}" "${compress_flag[@]}" "${feature_sets[@]}"
fi

current_stage=2
if stage_active 2; then
  log "stage 2: training examples"
  # features for each derived dir as it is made; combine then merges them (skipped when up to date)
  derived_features() {
    run spk features --config "$feature_config" --feat-dir "features/$(basename "${feature_config%.*}")" \
      --nj "$nj" "${cmd_opts[@]}" --log-dir exp/make_features/log "${force_flag[@]}" "${compress_flag[@]}" \
      "${train_feats_flag[@]}" "$1"
  }
  src=$train_set
  if [ "$speed_perturb" = true ]; then
    run spk augment speed --src data/$src --out data/${src}_sp --factors 0.9,1.0,1.1 --nj "$nj" \
      "${cmd_opts[@]}" --log-dir exp/augment/log "${force_flag[@]}"
    src=${src}_sp
    derived_features data/$src
  fi
  if [ -n "$aug_offline" ]; then
    [ -n "$aug_sources" ] || { log "error: --aug-offline needs --aug-sources (a folder made by 'spk augment sources')"; exit 1; }
    num_opt=(); [ "$aug_num" != 0 ] && num_opt=(--num-aug "$aug_num")
    run spk augment data --src data/$src --out data/${src}_aug --kinds "$aug_offline" --sources "$aug_sources" \
      --nj "$nj" "${cmd_opts[@]}" --log-dir exp/augment/log "${force_flag[@]}"
    derived_features data/${src}_aug
    run spk augment combine --clean data/$src --aug data/${src}_aug "${num_opt[@]}" --out data/${src}_combined \
      "${force_flag[@]}"
    src=${src}_combined
    derived_features data/$src
  fi
  run spk egs --min-frames "$min_frames" --min-utts "$min_utts" --valid-per-spk "$valid_per_spk" \
    --valid-speakers "$valid_speakers" data/$egs_source "$egs"
  if [ "$train_feats" = lengths ]; then  # validation reads dumped features: the held-out dirs are small
    for held_out in "$egs/valid" "$egs/valid_trials"; do
      [ -d "$held_out" ] && run spk features --config "$feature_config" \
        --feat-dir "features/$(basename "${feature_config%.*}")" --nj "$nj" "${cmd_opts[@]}" \
        --log-dir exp/make_features/log --force "${compress_flag[@]}" "$held_out"
    done
  fi
fi

current_stage=3
if stage_active 3; then
  valid_opt=(); [ -d "$egs/valid" ] && valid_opt=(--valid-dir "$egs/valid")
  [ -d "$egs/valid_trials" ] && valid_opt+=(--valid-trials-dir "$egs/valid_trials")
  if [ -f "$exp/models/final.pt" ] && [ "$stage" -ne 3 ] && [ "$force" != true ]; then
    log "stage 3: $exp is already trained; skipping (run with --stage 3 to retrain)"
  else
    resume=--resume; [ -f "$exp/models/final.pt" ] && resume=--no-resume
    log "stage 3: training $exp ($config)"
    read -r -a overrides <<< "$train_overrides"  # split on spaces without globbing "[150,250]"
    set_opt=(); for o in "${overrides[@]}"; do set_opt+=(--set "$o"); done
    train_args=(--config "$config" --feature-config "$feature_config" --train-dir "$egs/train" \
      "${valid_opt[@]}" "${set_opt[@]}" --exp-dir "$exp" --device "$device" --threads "$threads" $resume)
    train_cmd=$gpu_cmd; [ "$device" = cpu ] && train_cmd=$cmd
    if [[ "$train_cmd" == slurm* ]]; then
      # one Slurm job over train_nodes nodes: srun starts one torchrun launcher per node, which meet
      # through c10d on the job's first node (spk train-launch --slurm); the log is exp/<tag>/log/train.log
      read -r -a slurm_opts <<< "${train_cmd#slurm}"
      mkdir -p "$exp/log"
      launch=$(printf '%q ' "$(command -v python)" -m spk train-launch --slurm --nnodes "$train_nodes" \
        --nproc-per-node "$train_nproc" -- "${train_args[@]}")
      if ! run sbatch --wait --job-name "spk-train-$tag" --nodes "$train_nodes" --ntasks-per-node 1 \
          --output "$exp/log/train.log" "${slurm_opts[@]}" --wrap "srun $launch"; then
        log "error: training failed on Slurm; the last lines of $exp/log/train.log:"
        tail -n 20 "$exp/log/train.log" >&2 || true
        exit 1
      fi
    elif [ "$train_nodes" -gt 1 ]; then
      log "error: --train-nodes $train_nodes needs a slurm job command (--cmd or --gpu-cmd 'slurm ...', or cmd.sh);"
      log "       without Slurm, start 'spk train-launch --nnodes N --rdzv-endpoint HOST:PORT -- ...' on each node"
      exit 1
    elif [ "$train_nproc" -gt 1 ]; then
      run spk train-launch --nproc-per-node "$train_nproc" -- "${train_args[@]}"
    else
      run spk train "${train_args[@]}"
    fi
  fi
fi

current_stage=4
if stage_active 4; then
  log "stage 4: embeddings"
  # the training set too: its speaker means identify speakers for models without a classifier head,
  # centre the embeddings and are the cohort of score normalisation
  needs_train=false
  { [ -n "$ident_sets" ] || [ "$center" = true ] || [ "$score_norm" != none ]; } && needs_train=true
  embed_sets=$(for s in $test_sets $ident_sets $calib_set $([ "$needs_train" = true ] && echo "$train_set"); do
                 echo "$s"; done | awk '!seen[$0]++')  # each set once
  chunk_opt=()
  [ "$embed_chunk" != 0 ] && chunk_opt=(--chunk-seconds "$embed_chunk" --chunk-overlap "$embed_overlap")
  embed_cmd=$cmd; [ "$device" = cuda ] && embed_cmd=$gpu_cmd
  sets_opt=(); for s in $embed_sets; do sets_opt+=(--data-dir "data/$s" --out-dir "$exp/embeddings/$s"); done
  [ ${#sets_opt[@]} -gt 0 ] && run spk embed --exp-dir "$exp" "${sets_opt[@]}" --device "$device" \
    --nj "$nj" --cmd "$embed_cmd" "${chunk_opt[@]}"  # one process: the model is loaded once
  if [ "$baseline" = true ]; then
    sets_opt=()
    for s in $test_sets; do
      if [ ! -f exp/baseline_mfcc_mean/embeddings/$s/xvector.scp ] || [ "$force" = true ]; then
        sets_opt+=(--data-dir "data/$s" --out-dir "exp/baseline_mfcc_mean/embeddings/$s")
      fi
    done
    [ ${#sets_opt[@]} -gt 0 ] && run spk baseline "${sets_opt[@]}"
  fi
fi

current_stage=5
if stage_active 5; then
  log "stage 5: scoring"
  baseline_opt=(); [ "$baseline" = true ] && baseline_opt=(--baseline-dir exp/baseline_mfcc_mean)
  run spk evaluate --exp-dir "$exp" --data-root data --train-set "$train_set" --test-sets "$test_sets" \
    --ident-sets "$ident_sets" --calib-set "$calib_set" --backend "$backend" --center "$center" \
    --score-norm "$score_norm" --top-n "$top_n" "${baseline_opt[@]}"
fi

current_stage=6
if stage_active 6; then
  log "stage 6: report"
  [ "$baseline" = true ] && [ -d exp/baseline_mfcc_mean/results ] && run spk report exp/baseline_mfcc_mean
  run spk report "$exp" --compare-root exp
  log "results of all experiments (exp/RESULTS.md):"
  cat exp/RESULTS.md
fi

current_stage=
log "done stages $stage-$stop_stage in $(( $(date +%s) - start_time )) s"
