"""Fit the calibration spk ships for resemblyzer-ge2e on real speech, and measure it on held-out speakers.

Data: the LibriSpeech excerpt (``../shared/data``; see its README): 251 speakers,
one utterance each. The speakers are split with a fixed seed into two disjoint
sets: a calibration set and a held-out evaluation set. In each set every file is
cut in two halves, each half embedded on its own by the imported package
(``SpeakerModel.embed``, the product's path: the package's features and its 1.6 s
partial windows); the trials are every first half against every second half (one
target trial per speaker, all other pairs non-target), scored by the API's cosine
(``spk.scoring.centred_cosine``, as ``spk verify`` scores). The halves of one file
come from one recording session: these are same-session trials, easier than
cross-session ones, and the error rates below are those of same-session use.

The calibration (``spk.calibration.calibrate``: prior-weighted logistic regression,
the thresholds at the EER, at a 1 % false-accept rate and the Bayes ones) is fitted
on the calibration speakers' trials only; its thresholds are then applied to the
held-out speakers' trials, whose false-accept and false-reject rates are reported.
With ``--write`` the result is written where spk keeps it
(``spk/pretrained_calibration/resemblyzer-ge2e.json``), and every later import of
the model (``spk pretrained import``, or ``--model resemblyzer-ge2e``) ships it as
the package's ``calibration.json``.

    pip install --no-deps resemblyzer webrtcvad-wheels
    python benchmarks/pretrained_calibration.py                 # measure only
    python benchmarks/pretrained_calibration.py --write         # refit what spk ships
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DEFAULT_DATA = REPO.parent / "shared" / "data" / "LibriSpeech" / "train-clean-100"
NAME = "resemblyzer-ge2e"


def split_speakers(speakers: list[str], seed: int, calibration_share: float) -> tuple[list[str], list[str]]:
    """Disjoint ``(calibration, held_out)`` speaker lists: a seeded permutation of the sorted speakers, cut."""
    order = np.random.default_rng(seed).permutation(sorted(speakers))
    cut = int(round(calibration_share * len(order)))
    return sorted(order[:cut].tolist()), sorted(order[cut:].tolist())


def split_trials(model, files: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Scores and labels (1 target) of every first half against every second half of ``files``."""
    from spk.audio import read_audio_file
    from spk.scoring import centred_cosine

    first, second = [], []
    for path in files:
        wave = read_audio_file(path)
        middle = len(wave) // 2
        first.append(model.embed(wave[:middle]))
        second.append(model.embed(wave[middle:]))
    first = np.stack(first)
    scores = np.stack([centred_cosine(first, test, model.center) for test in second], axis=1)  # [enrol, test]
    return scores.ravel(), np.eye(len(files), dtype=int).ravel()


def rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    """False-accept and false-reject rates (percent) of accepting ``score >= threshold``."""
    return {"threshold": float(threshold),
            "false_accept": 100.0 * float(np.mean(scores[labels == 0] >= threshold)),
            "false_reject": 100.0 * float(np.mean(scores[labels == 1] < threshold))}


def main(argv: list[str] | None = None) -> dict:
    """Fit, measure on the held-out speakers, print the figures (and write the calibration with --write)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="LibriSpeech folder (<spk>/<chapter>/*.flac)")
    parser.add_argument("--seed", type=int, default=13, help="seed of the speaker split [default: 13]")
    parser.add_argument("--calibration-share", type=float, default=0.5,
                        help="share of the speakers the calibration is fitted on [default: 0.5]")
    parser.add_argument("--write", action="store_true",
                        help="write the calibration where spk keeps it (spk/pretrained_calibration/)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)

    from spk.api import SpeakerModel
    from spk.calibration import calibrate
    from spk.metrics import compute_cllr, compute_eer, compute_min_cllr
    from spk.model_dir import read_manifest
    from spk.pretrained import calibration_path, import_pretrained

    torch.set_num_threads(1)
    files = sorted(args.data.rglob("*.flac"))
    if not files:
        sys.exit(f"no .flac files under {args.data}; see ../shared/data/README.md")
    by_speaker: dict[str, list[Path]] = {}
    for path in files:
        by_speaker.setdefault(path.parent.parent.name, []).append(path)
    cal_speakers, held_speakers = split_speakers(list(by_speaker), args.seed, args.calibration_share)

    with tempfile.TemporaryDirectory() as tmp:
        package = import_pretrained(NAME, Path(tmp) / "ge2e", onnx=False, calibration=False)
        manifest = read_manifest(package)
        model = SpeakerModel.load(package)
        features = model.trained.config.features

    def trials(speakers):
        return split_trials(model, [path for speaker in speakers for path in by_speaker[speaker]])

    cal_scores, cal_labels = trials(cal_speakers)
    held_scores, held_labels = trials(held_speakers)
    description = (f"LibriSpeech train-clean-100 excerpt (../shared/data), {len(cal_speakers)} of its "
                   f"{len(by_speaker)} speakers (seed {args.seed}), split-utterance trials (each file cut in "
                   f"halves, every first half against every second half; same session)")
    calibration = calibrate(cal_scores, cal_labels, dev_trials=description)
    calibration.scoring = {"backend": "cosine", "center": None, "score_norm": "none"}

    held_llrs = calibration.transform(held_scores)
    held_out = {
        "speakers": held_speakers,
        "num_target": int(held_labels.sum()), "num_nontarget": int((held_labels == 0).sum()),
        "eer": 100.0 * compute_eer(held_scores, held_labels)[0],
        "cllr": compute_cllr(held_llrs, held_labels), "min_cllr": compute_min_cllr(held_scores, held_labels),
        "at_thresholds": {name: rates(held_scores, held_labels, values["score"])
                          for name, values in sorted(calibration.thresholds.items())},
    }
    fitted_on = {"description": description, "seed": args.seed, "speakers": cal_speakers,
                 "num_target": int(cal_labels.sum()), "num_nontarget": int((cal_labels == 0).sum()),
                 "script": "benchmarks/pretrained_calibration.py"}
    result = {"pretrained": NAME, "weights_sha256": manifest["source"]["sha256"], "features": features,
              "fitted_on": fitted_on, "held_out": held_out, "calibration": calibration.__dict__}

    print(f"calibration speakers {len(cal_speakers)} ({fitted_on['num_target']} target, "
          f"{fitted_on['num_nontarget']} non-target trials): a {calibration.a:.3f}, b {calibration.b:.3f}, "
          f"EER {calibration.dev_metrics['eer']:.2f} %")
    print(f"held-out speakers {len(held_speakers)} ({held_out['num_target']} target, {held_out['num_nontarget']} "
          f"non-target trials): EER {held_out['eer']:.2f} %, Cllr {held_out['cllr']:.3f} (min {held_out['min_cllr']:.3f})")
    for name, values in held_out["at_thresholds"].items():
        print(f"  threshold {name:<12} score {values['threshold']:.4f}: false accept {values['false_accept']:.2f} %, "
              f"false reject {values['false_reject']:.2f} % "
              f"(calibration set: {100 * calibration.thresholds[name]['fpr']:.2f} / "
              f"{100 * calibration.thresholds[name]['fnr']:.2f} %)")
    text = json.dumps(result, indent=2, sort_keys=True, allow_nan=False) + "\n"
    if args.write:
        target = calibration_path(NAME)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        print(f"wrote {target.relative_to(REPO)}")
    if args.json:
        args.json.write_text(text)
    return result


if __name__ == "__main__":
    main()
