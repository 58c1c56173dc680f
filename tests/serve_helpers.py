"""What the tests of ``spk serve`` share: a small untrained model, real speech, keys, and real servers.

- :func:`untrained_model`: an experiment dir with a 1-layer LSTM of random (seeded) weights and
  a calibration, made in a fraction of a second. The server's mechanics (keys, limits, audit,
  load, faults) do not need a model that recognises anyone, so these tests stay out of the
  shared tiny recipe's worker.
- :func:`speech_wav`: real LibriSpeech speech from ``../shared/data`` as WAV bytes (the
  speech-presence check refuses synthetic noise, as it should).
- :class:`ThreadServer`: ``spk.service`` on uvicorn in a thread of the test process, on a
  free port of 127.0.0.1 (real HTTP, no process start-up).
- :class:`ServerProcess`: ``python -m spk serve`` as a real process, for signals and kill -9.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRISPEECH = ROOT.parent / "shared" / "data" / "LibriSpeech" / "train-clean-100"

UNTRAINED_CONFIG = """\
encoder: lstm
encoder_conf: {hidden_size: 32, num_layers: 1}
pooling: mean
embedding_dim: 16
loss: softmax
epochs: 1
chunk_frames: [100, 150]
features: {kind: fbank, num_mel_bins: 40, cmvn: utterance}
"""


def untrained_model(path: Path, seed: int = 0) -> Path:
    """An experiment dir at ``path`` whose model has seeded random weights, with a calibration."""
    import torch

    from spk.calibration import Calibration, save_calibration
    from spk.features import FeatureConfig
    from spk.model_dir import CALIBRATION, CONFIG, FINAL_WEIGHTS, SPEAKERS, read_experiment_config
    from spk.models import build_embedder

    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG).write_text(UNTRAINED_CONFIG)
    speakers = [f"train{i}" for i in range(4)]
    (path / SPEAKERS).write_text("".join(f"{name}\n" for name in speakers))
    config = read_experiment_config(path)
    torch.manual_seed(seed)
    model = build_embedder(config.phases()[-1].to_dict(), FeatureConfig.from_dict(config.features).dim,
                           len(speakers))
    (path / FINAL_WEIGHTS).parent.mkdir(exist_ok=True)
    torch.save({"model": model.state_dict()}, path / FINAL_WEIGHTS)
    thresholds = {"eer": {"score": 0.5, "llr": 0.0}}
    save_calibration(path / CALIBRATION, Calibration(a=10.0, b=-5.0, thresholds=thresholds,
                                                     scoring={"backend": "cosine", "center": None,
                                                              "score_norm": "none"}))
    return path


def speech_files(count: int) -> list[Path]:
    """``count`` LibriSpeech FLAC files of different speakers (the test skips without ../shared/data)."""
    if not LIBRISPEECH.is_dir():
        pytest.skip(f"real speech is not here: {LIBRISPEECH} is missing (../shared/data beside the repo)")
    files = sorted(LIBRISPEECH.glob("*/*/*.flac"))
    return files[:count]


def speech_wav(index: int = 0, seconds: float | None = 4.0) -> bytes:
    """The first ``seconds`` of LibriSpeech file ``index`` as 16 kHz 16-bit WAV bytes."""
    import soundfile as sf

    samples, rate = sf.read(str(speech_files(index + 1)[index]), dtype="float32")
    if seconds is not None:
        samples = samples[:int(seconds * rate)]
    return wav_bytes(samples, rate)


def wav_bytes(samples: np.ndarray, rate: int = 16000, subtype: str = "PCM_16") -> bytes:
    """``samples`` as WAV bytes (16-bit PCM, or another soundfile subtype such as ``FLOAT``)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_key(db: Path, scope: str, name: str = "test", model: Path | None = None) -> str:
    """A new API key of ``scope`` in ``db`` (made with ``model`` when missing), through the library."""
    from spk.api import SpeakerModel
    from spk.service.auth import create_key
    from spk.speaker_db import SpeakerDB

    opened = SpeakerModel.load(model).open_db(db, create=True) if model is not None else SpeakerDB.open(db)
    with opened:
        return create_key(opened, name, scope)[0]


def wait_ready(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None,
               verify=True) -> None:
    """Wait until ``url``/v1/ready answers 200 (``verify``: httpx's, for an https server)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/v1/ready", timeout=2, verify=verify).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} was not ready within {timeout:g} s")


class ThreadServer:
    """The app of :func:`spk.service.app.create_app` served by uvicorn in a thread, on 127.0.0.1."""

    def __init__(self, model_dir: Path, db: Path, **settings):
        import uvicorn

        from spk.api import SpeakerModel
        from spk.service.app import ServeSettings, create_app

        model = SpeakerModel.load(model_dir)
        model.open_db(db, create=True).close()
        self.app = create_app(model, ServeSettings(db, **settings))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_config=None, access_log=False)
        self.server = uvicorn.Server(config)
        self.server.install_signal_handlers = lambda: None  # signals belong to pytest
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        wait_ready(self.url, timeout=30)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


class ServerProcess:
    """``python -m spk serve`` in its own process on a free port; its stderr (JSON log lines) in ``log``."""

    def __init__(self, model_dir: Path, db: Path, log: Path, *options: str, tls_cert: Path | None = None):
        self.port = free_port()
        self.tls_cert = tls_cert  # with --ssl-certfile/--ssl-keyfile among the options: https, trusting it
        self.url = f"{'https' if tls_cert else 'http'}://127.0.0.1:{self.port}"
        self.log = log
        self.command = [sys.executable, "-m", "spk", "serve", "--model", str(model_dir), "--db", str(db),
                        "--port", str(self.port), *options]
        self.process: subprocess.Popen | None = None

    def launch(self) -> ServerProcess:
        """Start the process without waiting for it (:meth:`wait_ready` waits): other work can overlap
        the model's loading."""
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=log,
                                            stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        return self

    def wait_ready(self, timeout: float = 60.0) -> ServerProcess:
        """Wait until the server answers ready; its log's end is in the error when it does not."""
        try:
            wait_ready(self.url, timeout, process=self.process, verify=self.ssl_context())
        except AssertionError as error:
            raise AssertionError(f"{error}; the end of its log:\n{self.log.read_text()[-3000:]}") from None
        return self

    def start(self) -> ServerProcess:
        return self.launch().wait_ready()

    def ssl_context(self):
        """What httpx's ``verify`` takes: trust this server's own certificate (or the system's CAs)."""
        import ssl

        return ssl.create_default_context(cafile=str(self.tls_cert)) if self.tls_cert else True

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def wait(self, timeout: float = 30) -> int:
        return self.process.wait(timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def stop(self, timeout: float = 15) -> int | None:
        """SIGTERM (kill when it has not ended within ``timeout`` s); its exit status (None: never started)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return None if self.process is None else self.process.returncode

    def __exit__(self, *exc) -> None:
        self.stop()
