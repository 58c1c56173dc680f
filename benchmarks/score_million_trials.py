"""Benchmark: score 1,000,000 cosine trials from an embedding scp, reading included.

Writes random embeddings (``--ids`` ids, ``--dim`` dimensions) to a real Kaldi
ark/scp and a ``--trials``-line labelled trials file in a temporary directory,
then times what ``spk score`` does before writing anything: ``read_trials`` +
``load_embeddings`` + ``score_trials`` (cosine). Target: under 5 s on a 2-core
machine. With ``--cohort N`` it also times AS-norm (top 300) against N cohort
embeddings, on top of the same scoring.

    python benchmarks/score_million_trials.py [--trials 1000000] [--ids 2000] [--dim 256] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np

from spk.score_norm import score_trials_normalised
from spk.data import read_trials
from spk.scoring import load_embeddings, score_trials, trial_columns


def write_inputs(folder: Path, num_trials: int, num_ids: int, dim: int, cohort: int,
                 seed: int = 0) -> tuple[Path, Path, Path | None]:
    """``(trials, embedding scp, cohort scp or None)`` of random data under ``folder``."""
    rng = np.random.default_rng(seed)
    ids = [f"id{i:06d}" for i in range(num_ids)]
    scp = folder / "xvector.scp"
    with kaldiio.WriteHelper(f"ark,scp:{folder / 'xvector.ark'},{scp}") as writer:
        for utt, vector in zip(ids, rng.normal(size=(num_ids, dim)).astype(np.float32)):
            writer(utt, vector)
    cohort_scp = None
    if cohort:
        cohort_scp = folder / "cohort.scp"
        with kaldiio.WriteHelper(f"ark,scp:{folder / 'cohort.ark'},{cohort_scp}") as writer:
            for n, vector in enumerate(rng.normal(size=(cohort, dim)).astype(np.float32)):
                writer(f"cohort{n:06d}", vector)
    enroll = rng.integers(0, num_ids, num_trials).tolist()
    test = rng.integers(0, num_ids, num_trials).tolist()
    target = (rng.random(num_trials) < 0.1).tolist()
    trials = folder / "trials"
    trials.write_text("".join(f"{ids[e]} {ids[t]} {'target' if y else 'nontarget'}\n"
                              for e, t, y in zip(enroll, test, target)))
    return trials, scp, cohort_scp


def time_once(trials_path: Path, scp: Path, cohort_scp: Path | None) -> dict[str, float]:
    """Seconds per step of one read-and-score pass (and of AS-norm when a cohort is given)."""
    times = {}
    start = time.perf_counter()
    trials = trial_columns(read_trials(trials_path))
    times["read_trials"] = time.perf_counter() - start
    mark = time.perf_counter()
    embeddings = load_embeddings(scp)
    times["load_embeddings"] = time.perf_counter() - mark
    mark = time.perf_counter()
    scores = score_trials(trials, embeddings, embeddings, backend="cosine", trials_path=trials_path)
    times["score_trials"] = time.perf_counter() - mark
    times["total"] = time.perf_counter() - start
    assert scores.shape == (len(trials[0]),) and np.all(np.isfinite(scores))
    if cohort_scp is not None:
        mark = time.perf_counter()
        cohort = load_embeddings(cohort_scp)
        score_trials_normalised(trials, embeddings, embeddings, cohort, "asnorm", "cosine", 300, trials_path)
        times["asnorm (load cohort, score, normalise)"] = time.perf_counter() - mark
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1_000_000)
    parser.add_argument("--ids", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--cohort", type=int, default=0, help="cohort size for an AS-norm timing (0: none)")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the fastest is reported")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        trials, scp, cohort_scp = write_inputs(Path(folder), args.trials, args.ids, args.dim, args.cohort)
        size = trials.stat().st_size / 2 ** 20
        print(f"{args.trials} trials ({size:.1f} MiB), {args.ids} ids x {args.dim} dims"
              + (f", cohort {args.cohort}" if args.cohort else ""))
        runs = [time_once(trials, scp, cohort_scp) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["total"])
    for step, seconds in best.items():
        print(f"  {step:40s} {seconds:6.2f} s")
    print(f"read + load + score: {best['total']:.2f} s (best of {args.repeat}; "
          "all: " + ", ".join(f"{r['total']:.2f}" for r in runs) + ")")


if __name__ == "__main__":
    main()
