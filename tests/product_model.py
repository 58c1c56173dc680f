"""The tiny real model of the product and recipe tests: the real mini recipe, run once per test session.

:func:`trained_recipe` copies ``recipes/mini/run.sh`` into a temporary folder and
runs the whole recipe, stages 0-6, at tiny size (8 training speakers, a 2-epoch
1-layer LSTM) through the real ``run.sh``: the whole-recipe run of the suite, whose
output ``tests/test_recipe_mini.py`` checks, and the model the API and CLI tests
use. When the recipe leaves no ``exp/tiny/calibration.json`` (a recipe without a
dev set), one is fitted with ``spk score`` + ``spk calibrate`` on the test trials.
A second, head-less model (contrastive loss, 1 epoch) is trained in the same
folder for the tests of identification without a classifier head.

The result is cached in this module, so every test file that asks for it within
one pytest process shares one run. ``tests/conftest.py`` keeps the tests that use
it in one xdist group and runs ``tests/test_recipe_mini.py`` (which reruns stages
in the folder) after the others.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPK = [sys.executable, "-m", "spk"]

TINY_CONFIG = """\
encoder: lstm
encoder_conf: {hidden_size: 32, num_layers: 1}
pooling: mean
embedding_dim: 16
loss: softmax
epochs: 2
batch_size: 16
chunk_frames: [100, 150]
"""

TINY_HEADLESS_CONFIG = """\
encoder: lstm
encoder_conf: {hidden_size: 32, num_layers: 1}
pooling: mean
embedding_dim: 16
loss: contrastive
speakers_per_batch: 4
utts_per_speaker: 2
epochs: 1
chunk_frames: [100, 150]
"""


@dataclass(frozen=True)
class ProductModel:
    """Where the tiny recipe's products are."""

    recipe: Path  # the recipe folder (data/, exp/, corpus/)
    exp: Path  # exp/tiny: softmax model with a head and a calibration.json
    headless_exp: Path  # exp/tiny_headless: contrastive model, no head, no calibration
    first_run: subprocess.CompletedProcess  # the run of stages 0-6 (its stdout ends with the results table)

    @property
    def test_data(self) -> Path:
        return self.recipe / "data" / "test"

    def wav_paths(self, data_set: str = "test") -> dict[str, str]:
        """utterance id -> audio path of a data dir of the recipe."""
        lines = (self.recipe / "data" / data_set / "wav.scp").read_text().splitlines()
        return dict(line.split(maxsplit=1) for line in lines if line.strip())

    def utts_of(self, speaker: str, data_set: str = "test") -> list[str]:
        """The audio paths of one speaker's utterances in a data dir, sorted by utterance id."""
        paths = self.wav_paths(data_set)
        return [paths[utt] for utt in sorted(paths) if utt.startswith(speaker + "-")]

    def speakers(self, data_set: str = "test") -> list[str]:
        """Speakers of a data dir (from its spk2utt)."""
        lines = (self.recipe / "data" / data_set / "spk2utt").read_text().splitlines()
        return [line.split()[0] for line in lines if line.strip()]


_CACHE: dict[str, ProductModel] = {}


# the options of every run of the tiny recipe (tests/test_recipe_mini.py reruns stages with them)
TINY_RECIPE_OPTIONS = ("--nj", "1", "--train-speakers", "8", "--test-speakers", "4", "--dev-speakers", "3",
                       "--min-frames", "100", "--threads", "1")


def run_recipe(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """``./run.sh`` of the tiny recipe in ``folder`` with :data:`TINY_RECIPE_OPTIONS` and ``args``."""
    return subprocess.run(["./run.sh", *TINY_RECIPE_OPTIONS, "--config", "tiny.yaml", *args], cwd=folder,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def _run(command: list[str], cwd: Path, what: str) -> subprocess.CompletedProcess:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900,
                            stdin=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _check(result, what)
    return result


def _check(result: subprocess.CompletedProcess, what: str) -> None:
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(map(str, result.args))}):\n{result.stderr[-4000:]}")


def trained_recipe(tmp_path_factory) -> ProductModel:
    """Train (once per process) and return the tiny models; ``tmp_path_factory`` is pytest's."""
    if "model" in _CACHE:
        return _CACHE["model"]
    folder = tmp_path_factory.mktemp("product_recipe")
    (folder / "run.sh").write_text((ROOT / "recipes/mini/run.sh").read_text())
    (folder / "run.sh").chmod(0o755)
    for name in ("path.sh", "steps", "conf", "local"):
        os.symlink(ROOT / "recipes/mini" / name, folder / name)
    (folder / "tiny.yaml").write_text(TINY_CONFIG)
    (folder / "tiny_headless.yaml").write_text(TINY_HEADLESS_CONFIG)
    first_run = run_recipe(folder, "--stage", "0", "--stop-stage", "6")
    _check(first_run, "the tiny mini recipe")
    exp = folder / "exp" / "tiny"
    if not (exp / "calibration.json").exists():
        _fit_calibration_on_test(folder, exp)
    _check(run_recipe(folder, "--config", "tiny_headless.yaml", "--stage", "3", "--stop-stage", "3"),
           "training the head-less tiny model")
    _CACHE["model"] = ProductModel(folder, exp, folder / "exp" / "tiny_headless", first_run)
    return _CACHE["model"]


def _fit_calibration_on_test(folder: Path, exp: Path) -> None:
    """exp/calibration.json from the test trials' cosine scores (what stage 5 does with --calib-set)."""
    scp = exp / "embeddings/test/xvector.scp"
    scores = exp / "calibration/test_cosine.scores"
    scores.parent.mkdir(parents=True, exist_ok=True)
    _run([*SPK, "score", "--trials", "data/test/trials", "--enroll-scp", str(scp), "--test-scp", str(scp),
          "--backend", "cosine", "--scores-out", str(scores), "--results-out", str(scores.with_suffix(".json"))],
         folder, "scoring the test trials for calibration")
    _run([*SPK, "calibrate", "--scores", str(scores), "--trials", "data/test/trials",
          "--out", str(exp / "calibration.json")], folder, "spk calibrate")
