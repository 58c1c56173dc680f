"""Benchmark: latency of one verification through the Python API, the model loaded once.

One call of ``SpeakerModel.verify`` on a 3 s clip does everything a deployed
verifier does per request: read the file, compute fbank features and CMVN, run
the embedder, score against the claimed speaker's model, apply the threshold (and
the calibration when the model has one). The claimed speaker's model is the
embedding of another utterance of the same speaker, computed once beforehand.
Target: median <= 50 ms on CPU.

    python benchmarks/verify_latency.py                       # recipes/mini/exp/lstm_softmax, 1 torch thread
    python benchmarks/verify_latency.py --threads 0 --reps 200 --model recipes/mini/exp/gru_aam
    python benchmarks/verify_latency.py --model resemblyzer-ge2e --audio A.flac --enroll B.flac --no-speech-check
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from spk.api import SpeakerModel

ROOT = Path(__file__).resolve().parents[1]
CLIP_S = 3.0


def mini_clips(corpus: Path) -> tuple[Path, Path]:
    """Two utterances of the same mini speaker, the first at least 3 s long."""
    for speaker_dir in sorted((corpus / "wav").iterdir()):
        files = sorted(speaker_dir.rglob("*.wav"))
        long_ones = [f for f in files if sf.info(f).duration >= CLIP_S]
        if long_ones and len(files) > 1:
            other = next(f for f in files if f != long_ones[0])
            return long_ones[0], other
    raise SystemExit(f"no utterance of {CLIP_S:g} s or more in {corpus}; run recipes/mini/run.sh --stage 0 first")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "recipes/mini/exp/lstm_softmax",
                        help="experiment dir or model package")
    parser.add_argument("--audio", type=Path, default=None,
                        help="clip to verify (its first 3 s are used) [default: one from the mini corpus]")
    parser.add_argument("--enroll", type=Path, default=None, help="enrollment utterance [default: from mini]")
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-speech-check", action="store_true",
                        help="turn off the speech-presence check (Silero VAD), to see what it costs")
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    audio, enroll = args.audio, args.enroll
    if audio is None or enroll is None:
        default_audio, default_enroll = mini_clips(ROOT / "recipes/mini/corpus/mini")
        audio, enroll = audio or default_audio, enroll or default_enroll

    started = time.perf_counter()
    model = SpeakerModel.load(args.model, device=args.device, speech_check=not args.no_speech_check)
    load_s = time.perf_counter() - started
    reference = model.embed(enroll)
    samples, rate = sf.read(audio, dtype="float32")
    samples = samples[: int(CLIP_S * rate)]
    calibrated = model.calibration is not None
    threshold = None if calibrated else 0.5

    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.wav"
        sf.write(clip, samples, rate, subtype="PCM_16")
        for _ in range(args.warmup):
            model.verify(clip, reference, "speaker", threshold=threshold)
        times = []
        for _ in range(args.reps):
            tick = time.perf_counter()
            result = model.verify(clip, reference, "speaker", threshold=threshold)
            times.append(time.perf_counter() - tick)
    ms = np.array(times) * 1000
    print(f"model      {args.model} (loaded in {load_s:.2f} s; {model.embedding_dim}-dim, "
          f"{'calibrated' if calibrated else 'no calibration: explicit threshold 0.5'})")
    print(f"clip       {audio} (first {len(samples) / rate:.2f} s at {rate} Hz), enrolled from {enroll}")
    print(f"device     {args.device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}, "
          f"speech check {'on' if model.speech_check else 'off'}")
    print(f"verify     {args.reps} calls: median {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms, "
          f"min {ms.min():.1f} ms, max {ms.max():.1f} ms (target: median <= 50 ms)")
    print(f"last       {result.to_dict()}")


if __name__ == "__main__":
    main()
