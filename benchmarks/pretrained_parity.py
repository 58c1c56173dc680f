"""Benchmark: the imported resemblyzer-ge2e package against Resemblyzer itself, on real speech.

For every file of the LibriSpeech excerpt (``../shared/data``; see its README) it
embeds the audio twice:

- spk: ``SpeakerModel.embed(path)`` of the package (the product's whole path: the
  file read by ``spk.audio``, the audio checks, features by the inference chain:
  loudness to -30 dBFS, WebRTC-VAD silence trimming, mel power; the embedder on the
  package's own windows, Resemblyzer's 1.6 s partial utterances);
- Resemblyzer: ``VoiceEncoder.embed_utterance(preprocess_wav(path))``.

It reports the per-utterance cosine between the two (min, median, share >= 0.99);
the split-utterance EER of each (every file cut in two halves, each half embedded
on its own; trials are every first half against every second half: one target per
file, all others non-targets; the clips of a speaker come from one session, so
this is same-session verification); and the speed of each whole path on the whole
files with one torch thread (seconds of audio per second of compute).

Measured (2026-11-30, 2 shared CPU cores, torch 2.13 CPU, Resemblyzer 0.1.4, librosa 0.11):
all 251 files (3141 s): cosine min 0.9999999 (whole files), 0.9999987 (halves), median 1.0000000;
split-utterance EER 2.390 % for both (251 target, 62750 non-target trials); speed 101.8x real time
for spk, 89.1x for Resemblyzer. First 60 files (739 s): EER 3.333 % for both, 113.6x against 98.9x.

    pip install --no-deps resemblyzer webrtcvad-wheels && pip install librosa
    python benchmarks/pretrained_parity.py                  # imports the package into a temporary dir
    python benchmarks/pretrained_parity.py --model pkg/ge2e --limit 60 --json parity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "LibriSpeech" / "train-clean-100"


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors."""
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def split_eer(first: np.ndarray, second: np.ndarray) -> float:
    """EER (percent) of every first half against every second half; row i of both is file i."""
    from spk.metrics import compute_eer

    a = first / np.linalg.norm(first, axis=1, keepdims=True)
    b = second / np.linalg.norm(second, axis=1, keepdims=True)
    scores = (a @ b.T).ravel()
    labels = np.eye(len(a), dtype=bool).ravel()
    return 100.0 * compute_eer(scores, labels)[0]


def main(argv: list[str] | None = None) -> dict:
    """Run the comparison; prints a summary and returns the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder searched for *.flac")
    parser.add_argument("--model", type=Path, default=None,
                        help="the imported package [default: import resemblyzer-ge2e into a temporary dir]")
    parser.add_argument("--limit", type=int, default=0, help="use the first N files (sorted) [default: all]")
    parser.add_argument("--threads", type=int, default=1, help="torch threads [default: 1]")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    try:
        from resemblyzer import VoiceEncoder, preprocess_wav
    except ImportError as error:
        sys.exit(f"resemblyzer is needed ({error}): pip install --no-deps resemblyzer webrtcvad-wheels; "
                 "pip install librosa")
    from spk.api import SpeakerModel
    from spk.audio import read_audio_file
    from spk.pretrained import import_pretrained, partials_chunking

    torch.set_num_threads(args.threads)
    files = sorted(args.data.rglob("*.flac"))
    if args.limit:
        files = files[:args.limit]
    if not files:
        sys.exit(f"no .flac files under {args.data}; see ../shared/data/README.md")

    with tempfile.TemporaryDirectory() as tmp:
        package = args.model or import_pretrained("resemblyzer-ge2e", Path(tmp) / "ge2e", onnx=False)
        model = SpeakerModel.load(package)
    if model.default_chunking != partials_chunking():
        sys.exit(f"{package} does not embed in Resemblyzer's partials (embed_windows); import it again with "
                 "spk pretrained import resemblyzer-ge2e")
    encoder = VoiceEncoder("cpu", verbose=False)

    def spk_embed(audio) -> np.ndarray:
        return model.embed(audio)

    def theirs_embed(wave: np.ndarray) -> np.ndarray:
        return encoder.embed_utterance(preprocess_wav(wave, source_sr=16000))

    # warm both paths up once, outside the timings
    spk_embed(files[0])
    theirs_embed(read_audio_file(files[0]))

    audio_s = 0.0
    ours, theirs = [], []
    ours_s = theirs_s = 0.0
    for path in files:
        start = time.perf_counter()
        ours.append(spk_embed(path))
        ours_s += time.perf_counter() - start
        start = time.perf_counter()
        theirs.append(encoder.embed_utterance(preprocess_wav(path)))
        theirs_s += time.perf_counter() - start
        audio_s += len(read_audio_file(path)) / 16000
    cosines = np.array([cosine(a, b) for a, b in zip(ours, theirs)])

    halves = {"spk": ([], []), "resemblyzer": ([], [])}
    half_cosines = []
    for path in files:
        wave = read_audio_file(path)
        middle = len(wave) // 2
        for part, piece in enumerate((wave[:middle], wave[middle:])):
            a, b = spk_embed(piece), theirs_embed(piece)
            halves["spk"][part].append(a)
            halves["resemblyzer"][part].append(b)
            half_cosines.append(cosine(a, b))
    half_cosines = np.array(half_cosines)

    figures = {
        "files": len(files), "audio_s": round(audio_s, 1), "torch_threads": args.threads,
        "cosine_whole": {"min": float(cosines.min()), "median": float(np.median(cosines)),
                         "share_ge_0.99": float(np.mean(cosines >= 0.99))},
        "cosine_halves": {"min": float(half_cosines.min()), "median": float(np.median(half_cosines)),
                          "share_ge_0.99": float(np.mean(half_cosines >= 0.99))},
        "split_eer_percent": {name: split_eer(np.array(a), np.array(b)) for name, (a, b) in halves.items()},
        "split_trials": {"target": len(files), "nontarget": len(files) * (len(files) - 1)},
        "speed_x_realtime": {"spk": audio_s / ours_s, "resemblyzer": audio_s / theirs_s},
        "seconds": {"spk": ours_s, "resemblyzer": theirs_s},
    }
    print(f"{len(files)} files, {audio_s:.0f} s of audio, {args.threads} torch thread(s)")
    for key in ("cosine_whole", "cosine_halves"):
        c = figures[key]
        print(f"{key}: min {c['min']:.7f}  median {c['median']:.7f}  >= 0.99: {100 * c['share_ge_0.99']:.1f} %")
    eer = figures["split_eer_percent"]
    print(f"split-utterance EER: spk {eer['spk']:.3f} %, resemblyzer {eer['resemblyzer']:.3f} % "
          f"({len(files)} target, {len(files) * (len(files) - 1)} non-target trials; same-session)")
    speed = figures["speed_x_realtime"]
    print(f"speed (read + front end + model): spk {speed['spk']:.1f}x real time, "
          f"resemblyzer {speed['resemblyzer']:.1f}x real time")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
