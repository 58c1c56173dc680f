"""Benchmark: header reads of corpus preparation (:func:`local.corpus.audio_durations`), one process vs jobs.

Every corpus preparation (``spk prepare librispeech|voxceleb|timit|musan|rirs_noises``)
reads the header of each audio file for its duration; with ``--nj N`` the reads run as
``N`` jobs of :mod:`spk.jobs` (processes here with ``--cmd local``). This script writes
``--files`` small wav files (0.1 s of noise, 16 kHz, 16-bit) under ``--dir`` (once; a later
run reuses them), then times the reads by one process (``nj=1``: a loop, nothing written)
and by each ``--nj`` given, alternating ``--rounds`` times, and prints files/s for each
(the best round, and the median), after checking that every run returned the same values.

The files are read from the page cache after the first pass (warm cache): the figures
measure the per-file work (open, stat, parse a header, the jobs' start and merge), not a
disk. Write the files outside the repository:

    .venv/bin/python benchmarks/prep_durations.py --dir /tmp/spk-prep-durations --files 20000 --nj 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from local.corpus import audio_durations


def make_files(folder: Path, count: int) -> list[Path]:
    """``count`` wav files in ``folder/<NNN>/<NNNNNN>.wav`` (1,000 a folder), written when missing."""
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(1600)).astype(np.float32)
    paths = [folder / f"{index // 1000:03d}" / f"{index:06d}.wav" for index in range(count)]
    for path in paths:
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, audio, 16000, subtype="PCM_16")
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, required=True, help="Where the wav files are (or go), outside the repo.")
    parser.add_argument("--files", type=int, default=20000, help="How many files.")
    parser.add_argument("--nj", type=int, nargs="+", default=[2], help="Numbers of jobs to time against one process.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds of each.")
    args = parser.parse_args()
    started = time.monotonic()
    paths = make_files(args.dir, args.files)
    print(f"{len(paths)} files in {args.dir} (ready after {time.monotonic() - started:.1f} s)")
    audio_durations(paths, progress=False)  # warm the page cache
    seconds: dict[int, list[float]] = {1: [], **{nj: [] for nj in args.nj}}
    reference = None
    with tempfile.TemporaryDirectory(prefix="prep-durations-") as work:
        for _ in range(args.rounds):
            for nj in seconds:
                started = time.monotonic()
                result = audio_durations(paths, nj=nj, cmd="local", work_dir=Path(work), progress=False)
                seconds[nj].append(time.monotonic() - started)
                reference = reference or result
                if result != reference:
                    raise SystemExit(f"nj={nj} returned other durations than one process")
    for nj, times in seconds.items():
        what = "one process" if nj == 1 else f"{nj} jobs"
        print(f"{what:>12}: {len(paths) / min(times):8.0f} files/s best, {len(paths) / statistics.median(times):8.0f} "
              f"median ({', '.join(f'{t:.2f}' for t in times)} s)")


if __name__ == "__main__":
    main()
