#!/usr/bin/env bash
# What a trained model produces, made with the spk code under CODE_ROOT: stage-4 embeddings (whole
# utterances, and 1 s chunks in 2 jobs) and the --json output of spk enroll / verify (plain,
# --window, --vad, --stream) / identify / eval-id on a few files. Run it for two versions of the code
# on the same model, then compare them with benchmarks/compare_outputs.py: a refactoring that claims
# to change nothing must give identical outputs (this is how issue 12's refactoring was checked).
#
# Usage: benchmarks/product_outputs.sh CODE_ROOT RECIPE_DIR OUT_DIR
#   RECIPE_DIR: a mini recipe folder with a trained exp/tiny (e.g. the tiny run of tests/product_model.py:
#   ./run.sh --nj 1 --train-speakers 8 --test-speakers 4 --dev-speakers 3 --min-frames 100 --config tiny.yaml)
set -uo pipefail
[ $# -eq 3 ] || { echo "usage: $0 CODE_ROOT RECIPE_DIR OUT_DIR" >&2; exit 2; }
root=$(readlink -f "$1"); recipe=$(readlink -f "$2"); out=$3
rm -rf "$out"; mkdir -p "$out"; out=$(readlink -f "$out")
export PYTHONPATH=$root OMP_NUM_THREADS=1
py=${PYTHON:-$(dirname "$(readlink -f "$0")")/../.venv/bin/python}
exp=$recipe/exp/tiny; data=$recipe/data; wav=$recipe/corpus/mini/wav
cd "$recipe"
for s in test test_noisy ident_test; do
  $py -m spk embed --exp-dir "$exp" --data-dir "$data/$s" --out-dir "$out/emb/$s" --nj 1 2>/dev/null
done
$py -m spk embed --exp-dir "$exp" --data-dir "$data/test" --out-dir "$out/emb/test_chunk" --chunk-seconds 1 \
  --chunk-overlap 0.5 --nj 2 2>/dev/null
db=$out/voices.db
$py -m spk enroll --model "$exp" --db "$db" --speaker spk009 --json "$wav"/spk009/s1/spk009-s1-0{1,2}.wav \
  > "$out/enroll1.json" 2>/dev/null
$py -m spk enroll --model "$exp" --db "$db" --speaker spk010 --json --window 1 "$wav/spk010/s1/spk010-s1-01.wav" \
  > "$out/enroll2.json" 2>/dev/null
for f in spk009/s2/spk009-s2-01 spk010/s2/spk010-s2-01 spk011/s1/spk011-s1-01; do
  n=$(basename $f)
  $py -m spk verify --model "$exp" --db "$db" --claim spk009 --json "$wav/$f.wav" > "$out/verify_$n.json" 2>/dev/null
  $py -m spk verify --model "$exp" --db "$db" --claim spk010 --json --window 1 --hop 0.5 "$wav/$f.wav" \
    > "$out/verify_win_$n.json" 2>/dev/null
  $py -m spk verify --model "$exp" --db "$db" --claim spk009 --json --vad "$wav/$f.wav" > "$out/verify_vad_$n.json" 2>/dev/null
  $py -m spk verify --model "$exp" --db "$db" --claim spk009 --json --stream "$wav/$f.wav" \
    > "$out/verify_stream_$n.json" 2>/dev/null
  $py -m spk identify --model "$exp" --json "$wav/$f.wav" > "$out/identify_$n.json" 2>/dev/null
  $py -m spk identify --model "$exp" --db "$db" --json "$wav/$f.wav" > "$out/identify_db_$n.json" 2>/dev/null
done
$py -m spk eval-id --exp-dir "$exp" --embeddings "$out/emb/ident_test/xvector.scp" --data-dir "$data/ident_test" \
  --results-out "$out/ident.json" 2>/dev/null
rm -f "$db" "$db-wal" "$db-shm"
echo "wrote $(ls "$out" | wc -l) outputs to $out"
