"""The ``mini`` corpus: multi-speaker English speech synthesised offline with eSpeak NG.

Every synthetic speaker is its own eSpeak voice variant (vocal-tract length as
formant scaling, pitch base and range, speaking rate, breathiness, roughness,
accent), every utterance says a different sentence, and every recording session
has its own channel: a random EQ, reverberation and additive noise at a random
SNR.  Speakers therefore differ the way real ones do, and the same speaker
sounds different from session to session.

Corpus layout (written by :func:`generate_corpus`)::

    <corpus>/
      README.txt
      speakers.tsv     speaker gender accent role pitch_low pitch_high vtl_factor words_per_minute
      sessions.tsv     speaker session noise snr_db rt60 drr_db gain_db
      text.tsv         utterance sentence
      wav/<speaker>/<session>/<speaker>-<session>-<nn>.wav    16 kHz, 16-bit mono

``role`` is ``train`` (training speakers; their last session is held out for
closed-set identification), ``test`` (disjoint speakers for verification
trials) or ``dev`` (more disjoint speakers with their own trials, for fitting
score calibration without touching the test trials).  :func:`prepare_data_dirs` turns the corpus into Kaldi data dirs
(``spk prepare mini`` does both).
"""

from __future__ import annotations

import csv
import logging
import multiprocessing
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import click
import numpy as np
import soundfile as sf
import soxr

from local.cli import COMMAND_SETTINGS, prep_errors, prep_options
from local.corpus import CorpusError, Utterance, whole_file
from local.datadirs import DataSet, write_data_dirs
from local.espeak import EspeakSynth, make_data_mirror, variant_dir
from local.mini_text import SentenceGenerator
from local.trials import make_trials
from spk.augment import simulate
from spk.data.staging import swap_into_place
from spk.jobs import JobError, ParallelStep, inputs_key, job_share, parse_job_command, run_step

logger = logging.getLogger("local.mini")  # also when run as __main__

SAMPLE_RATE = 16000
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-gb-x-gbclan",
           "en-gb-x-gbcwmd", "en-us-nyc")


@dataclass(frozen=True, kw_only=True)
class MiniConfig:
    """Size and seed of the corpus. The numbers of speakers and the seed have no default here: the
    ``mini`` recipe's run.sh declares them. The other fields are declared here only."""

    num_train_speakers: int
    num_test_speakers: int
    num_dev_speakers: int  # disjoint speakers with their own trials, for calibration (after the others)
    train_sessions: int = 3  # sessions of a training speaker used for training
    train_utts_per_session: int = 6
    ident_utts: int = 4  # utterances of one more session, held out for identification
    test_sessions: int = 4
    test_utts_per_session: int = 3
    snr_db: tuple[float, float] = (5.0, 25.0)
    rt60_s: tuple[float, float] = (0.15, 0.6)
    seed: int


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: an eSpeak voice variant plus speaking habits."""

    speaker: str
    gender: str
    accent: str
    role: str
    pitch_low: int
    pitch_high: int
    vtl_factor: float
    formant_freq: tuple[int, ...]
    formant_height: tuple[int, ...]
    formant_width: tuple[int, ...]
    breath: tuple[int, ...]
    roughness: int
    flutter: int
    voicing: int
    consonants: int
    words_per_minute: int

    def variant_text(self) -> str:
        """The eSpeak NG voice-variant file for this speaker."""
        lines = ["language variant", f"name {self.speaker}", f"gender {self.gender}",
                 f"pitch {self.pitch_low} {self.pitch_high}", f"flutter {self.flutter}",
                 f"roughness {self.roughness}", f"voicing {self.voicing}",
                 f"consonants {self.consonants}", "breath " + " ".join(map(str, self.breath))]
        for index, (freq, height, width) in enumerate(
                zip(self.formant_freq, self.formant_height, self.formant_width)):
            lines.append(f"formant {index} {freq} {height} {width}")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Session:
    """One recording session of a speaker: its channel and acoustic environment."""

    speaker: str
    session: str
    noise: str
    snr_db: float
    rt60: float  # 0 = dry
    drr_db: float
    gain_db: float
    seed: int


@dataclass
class SpeakerJob:
    """Everything one worker needs to synthesise all utterances of one speaker."""

    voice: Voice
    sessions: list[Session]
    utterances: list[tuple[str, str, str]] = field(default_factory=list)  # (utt, session, text)


def _sample_voice(speaker: str, role: str, rng: np.random.Generator) -> Voice:
    gender = "male" if rng.random() < 0.5 else "female"
    if gender == "male":
        pitch_low = int(rng.uniform(70, 125))
        pitch_high = pitch_low + int(rng.uniform(25, 75))
        vtl = rng.uniform(0.86, 1.02)
    else:
        pitch_low = int(rng.uniform(140, 215))
        pitch_high = pitch_low + int(rng.uniform(45, 110))
        vtl = rng.uniform(1.02, 1.20)
    freq = [100] + [int(round(100 * vtl * rng.uniform(0.95, 1.05))) for _ in range(8)]
    height = [100] + [int(rng.uniform(70, 130)) for _ in range(8)]
    width = [100] + [int(rng.uniform(80, 150)) for _ in range(8)]
    breath = [0] + [int(rng.integers(0, 4)) for _ in range(7)] if rng.random() < 0.4 else [0] * 8
    return Voice(
        speaker=speaker, gender=gender, accent=ACCENTS[rng.integers(len(ACCENTS))], role=role,
        pitch_low=pitch_low, pitch_high=pitch_high, vtl_factor=round(float(vtl), 4),
        formant_freq=tuple(freq), formant_height=tuple(height), formant_width=tuple(width),
        breath=tuple(breath), roughness=int(rng.integers(0, 5)), flutter=int(rng.integers(0, 40)),
        voicing=int(rng.uniform(80, 120)), consonants=int(rng.uniform(70, 130)),
        words_per_minute=int(rng.uniform(140, 200)),
    )


def _sample_session(speaker: str, session: str, config: MiniConfig, rng: np.random.Generator) -> Session:
    reverberant = rng.random() < 0.8
    return Session(
        speaker=speaker, session=session,
        noise=simulate.NOISE_TYPES[rng.integers(len(simulate.NOISE_TYPES))],
        snr_db=round(float(rng.uniform(*config.snr_db)), 2),
        rt60=round(float(rng.uniform(*config.rt60_s)), 3) if reverberant else 0.0,
        drr_db=round(float(rng.uniform(0.0, 10.0)), 2),
        gain_db=round(float(rng.uniform(-9.0, 0.0)), 2),
        seed=int(rng.integers(2**31)),
    )


def plan_corpus(config: MiniConfig) -> list[SpeakerJob]:
    """Decide every speaker, session and sentence, deterministically from ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    sentences = SentenceGenerator(np.random.default_rng(config.seed + 1))
    jobs = []
    # dev speakers come last, so adding them leaves every train and test speaker unchanged
    roles = (["train"] * config.num_train_speakers + ["test"] * config.num_test_speakers
             + ["dev"] * config.num_dev_speakers)
    for number, role in enumerate(roles, start=1):
        speaker = f"spk{number:03d}"
        voice = _sample_voice(speaker, role, rng)
        if role == "train":
            per_session = [config.train_utts_per_session] * config.train_sessions + [config.ident_utts]
        else:
            per_session = [config.test_utts_per_session] * config.test_sessions
        sessions = [_sample_session(speaker, f"s{i + 1}", config, rng) for i in range(len(per_session))]
        job = SpeakerJob(voice=voice, sessions=sessions)
        for session, count in zip(sessions, per_session):
            for index in range(1, count + 1):
                utt = f"{speaker}-{session.session}-{index:02d}"
                job.utterances.append((utt, session.session, sentences.next()))
        jobs.append(job)
    return jobs


_worker_synth: EspeakSynth | None = None
_worker_mirror: Path | None = None


def _init_worker(mirror: Path) -> None:
    global _worker_synth, _worker_mirror
    _worker_synth = EspeakSynth(mirror)
    _worker_mirror = mirror


def _render_speaker(job: SpeakerJob, out_dir: Path) -> float:
    """Synthesise and write all utterances of one speaker; returns seconds of audio written."""
    assert _worker_synth is not None and _worker_mirror is not None
    voice = job.voice
    (variant_dir(_worker_mirror) / voice.speaker).write_text(voice.variant_text())
    _worker_synth.set_voice(f"{voice.accent}+{voice.speaker}")
    sessions = {s.session: s for s in job.sessions}
    channels = {}
    for session in job.sessions:
        rng = np.random.default_rng(session.seed)
        eq = simulate.random_eq(SAMPLE_RATE, rng)
        rir = (simulate.exponential_rir(SAMPLE_RATE, session.rt60, rng, direct_to_reverberant_db=session.drr_db)
               if session.rt60 > 0 else None)
        channels[session.session] = (eq, rir)
    seconds = 0.0
    for utt_index, (utt, session_name, text) in enumerate(job.utterances):
        session = sessions[session_name]
        rng = np.random.default_rng([session.seed, utt_index])
        raw = _worker_synth.synthesize(
            text,
            words_per_minute=int(voice.words_per_minute * rng.uniform(0.92, 1.08)),
            pitch=int(rng.uniform(44, 56)), pitch_range=int(rng.uniform(40, 60)),
            seed=session.seed * 1009 + utt_index,  # without drawing from rng, so the rest stays as it was
        )
        speech = soxr.resample(raw, _worker_synth.sample_rate, SAMPLE_RATE, quality="HQ")
        speech = _pad_silence(speech, rng)
        eq, rir = channels[session_name]
        if rir is not None:
            speech = simulate.reverberate(speech, rir)
        speech = simulate.apply_eq(speech, eq)
        noise = simulate.coloured_noise(session.noise, len(speech), SAMPLE_RATE, rng)
        snr = session.snr_db + rng.uniform(-2.0, 2.0)
        speech = simulate.mix_at_snr(speech, noise, snr)
        peak = np.max(np.abs(speech)) + 1e-9
        speech = speech / peak * 0.7 * 10 ** (session.gain_db / 20.0)
        path = out_dir / "wav" / voice.speaker / session_name / f"{utt}.wav"
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, speech, SAMPLE_RATE, subtype="PCM_16")
        seconds += len(speech) / SAMPLE_RATE
    return seconds


def _pad_silence(speech: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Leading and trailing pauses of 0.1-0.4 s, as in read speech."""
    lead = np.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE), dtype=np.float32)
    trail = np.zeros(int(rng.uniform(0.1, 0.4) * SAMPLE_RATE), dtype=np.float32)
    return np.concatenate([lead, speech.astype(np.float32), trail])


def generate_corpus(out_dir: Path, config: MiniConfig, *, nj: int, cmd: str | None = None,
                    log_dir: Path | None = None) -> Path:
    """Synthesise the corpus into ``out_dir`` (skipped if a complete corpus with this config is there).

    ``nj`` jobs (:mod:`spk.jobs`, through job command ``cmd``: processes here or a Slurm
    job array) each synthesise a share of the speakers into a work folder beside
    ``out_dir``, which becomes ``out_dir`` only when complete: an interrupted run never
    leaves half a corpus, and a rerun runs only the jobs that did not finish.
    """
    out_dir = Path(out_dir).absolute()
    marker = out_dir / "config.tsv"
    if marker.exists() and marker.read_text() == _config_text(config):
        logger.info("mini corpus already complete in %s; skipping generation", out_dir)
        return out_dir
    if out_dir.exists():
        raise FileExistsError(
            f"{out_dir} exists but is not a complete mini corpus with this configuration; "
            "remove it (or choose another --corpus-dir) and run again")
    jobs = plan_corpus(config)
    nj = max(1, min(nj, len(jobs)))
    start = time.time()
    work = out_dir.parent / f".{out_dir.name}.jobs-{inputs_key(_config_text(config), nj)}"
    (work / "corpus").mkdir(parents=True, exist_ok=True)
    if not (work / ".espeak-data").is_dir():
        make_data_mirror(work / ".espeak-data")
    step = ParallelStep(name="synthesise_mini", task="mini-synthesis", num_jobs=nj, work_dir=work,
                        log_dir=Path(log_dir) if log_dir else work / "log",
                        args={"config": asdict(config), "work": str(work)})
    run_step(step, parse_job_command(cmd))
    total = sum(float((work / f"seconds.{job}").read_text()) for job in range(1, nj + 1))
    _write_metadata(work / "corpus", jobs)
    (work / "corpus" / "config.tsv").write_text(_config_text(config))
    swap_into_place(work / "corpus", out_dir)
    shutil.rmtree(work)
    logger.info("synthesised %.1f min of speech for %d speakers in %.1f s (%.0fx real time)",
                total / 60, len(jobs), time.time() - start, total / (time.time() - start))
    return out_dir


def synthesis_job(args: dict, job: int, num_jobs: int) -> None:
    """Job ``job`` of the corpus synthesis (task ``mini-synthesis``): its share of the speakers.

    eSpeak NG carries state from one synthesis to the next inside a process, so each
    speaker gets a fresh forked process: the audio then depends on neither the number
    of jobs nor the order they run in.
    """
    from tqdm import tqdm

    work = Path(args["work"])
    speakers = plan_corpus(MiniConfig(**args["config"]))
    mine = speakers[job_share(len(speakers), job, num_jobs)]
    context = multiprocessing.get_context("fork")
    with context.Pool(1, initializer=_init_worker, initargs=(work / ".espeak-data",), maxtasksperchild=1) as pool:
        results = pool.imap(_render_job, [(speaker, work / "corpus") for speaker in mine])
        seconds = sum(tqdm(results, total=len(mine), desc=f"synthesising speakers (job {job})", unit="spk",
                           disable=not sys.stderr.isatty()))
    (work / f"seconds.{job}").write_text(f"{seconds!r}\n")
    logger.info("job %d: %d speakers, %.1f s of speech", job, len(mine), seconds)


def _render_job(args: tuple[SpeakerJob, Path]) -> float:
    return _render_speaker(*args)


def _write_metadata(out_dir: Path, jobs: list[SpeakerJob]) -> None:
    with open(out_dir / "speakers.tsv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["speaker", "gender", "accent", "role", "pitch_low", "pitch_high",
                         "vtl_factor", "words_per_minute"])
        for job in jobs:
            v = job.voice
            writer.writerow([v.speaker, v.gender, v.accent, v.role, v.pitch_low, v.pitch_high,
                             v.vtl_factor, v.words_per_minute])
    with open(out_dir / "sessions.tsv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["speaker", "session", "noise", "snr_db", "rt60", "drr_db", "gain_db"])
        for job in jobs:
            for s in job.sessions:
                writer.writerow([s.speaker, s.session, s.noise, s.snr_db, s.rt60, s.drr_db, s.gain_db])
    with open(out_dir / "text.tsv", "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["utterance", "sentence"])
        for job in jobs:
            for utt, _, text in job.utterances:
                writer.writerow([utt, text])
    (out_dir / "README.txt").write_text(__doc__ or "")


def _config_text(config: MiniConfig) -> str:
    return "".join(f"{key}\t{value}\n" for key, value in asdict(config).items())


def read_corpus(corpus_dir: Path) -> tuple[list[Utterance], dict[str, str], dict[str, str]]:
    """Every utterance of a generated corpus, the role of each speaker, and the sentence of each utterance.

    Raises CorpusError naming the file when the corpus is incomplete.
    """
    corpus_dir = Path(corpus_dir).absolute()
    speakers_file = corpus_dir / "speakers.tsv"
    if not speakers_file.exists():
        raise CorpusError(f"{speakers_file} is missing: generate the corpus first (stage 0)")
    with open(speakers_file, newline="") as handle:
        roles = {row["speaker"]: row["role"] for row in csv.DictReader(handle, delimiter="\t")}
    utterances, text = [], {}
    with open(corpus_dir / "text.tsv", newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            utt = row["utterance"]
            speaker, session, _ = utt.split("-")
            path = corpus_dir / "wav" / speaker / session / f"{utt}.wav"
            if not path.exists():
                raise CorpusError(f"{path} is listed in text.tsv but missing; regenerate the corpus")
            utterances.append(whole_file(utt, speaker, path, session))
            text[utt] = row["sentence"]
    return utterances, roles, text


def split_corpus(utterances: list[Utterance], roles: dict[str, str]) -> dict[str, list[Utterance]]:
    """The sets ``train`` (training speakers' training sessions), ``ident_test`` (their last,
    held-out session, for closed-set identification), ``test`` (disjoint speakers, for trials)
    and, when the corpus has dev speakers, ``dev`` (disjoint again, for calibration trials)."""
    last_session: dict[str, str] = {}
    for u in utterances:
        if roles[u.speaker] == "train":
            last_session[u.speaker] = max(last_session.get(u.speaker, ""), u.session)
    sets: dict[str, list[Utterance]] = {"train": [], "ident_test": [], "test": []}
    for u in utterances:
        role = roles[u.speaker]
        if role in ("test", "dev"):
            sets.setdefault(role, []).append(u)
        elif u.session == last_session[u.speaker]:
            sets["ident_test"].append(u)
        else:
            sets["train"].append(u)
    return sets


def prepare_data_dirs(corpus_dir: Path, data_dir: Path, *, seed: int) -> dict[str, int]:
    """Kaldi data dirs ``train``, ``ident_test``, ``test`` and ``dev`` (both with ``trials``) under ``data_dir``.

    Returns the number of utterances per set.  The trial lists are balanced, and their
    enrollment and test sides always come from different sessions.  ``dev`` is written
    only when the corpus has dev speakers (corpora made before they existed have none).
    """
    utterances, roles, text = read_corpus(corpus_dir)
    datasets = {}
    for name, utts in split_corpus(utterances, roles).items():
        # non-targets drawn with a generator seeded by the seed alone, as the mini trial lists always were
        trials = make_trials(utts, seed, cross_session=True, nontarget_rng=np.random.default_rng(seed)) \
            if name in ("test", "dev") else None
        datasets[name] = DataSet(utts, trials, {"text": text})
    return {name: summary.num_utterances for name, summary in write_data_dirs(data_dir, datasets).items()}


@click.command("mini", context_settings=COMMAND_SETTINGS)
@prep_options(corpus_help="Where the corpus is, or goes (synthesised unless a complete one with these "
                          "settings is there).")
@click.option("--num-train-speakers", type=int, required=True,
              help="Training speakers (their last session is held out for identification).")
@click.option("--num-test-speakers", type=int, required=True, help="Disjoint speakers for the verification trials.")
@click.option("--num-dev-speakers", type=int, required=True,
              help="More disjoint speakers with their own trials, for calibration (0: none).")
@click.option("--nj", type=click.IntRange(min=1), required=True, help="Parallel synthesis jobs.")
@click.option("--cmd", default="local", envvar="SPK_CMD", show_default=True,
              help="Where the synthesis jobs run: local, or 'slurm [sbatch options]' [env: SPK_CMD].")
def command(corpus_dir: str, data_dir: str, num_train_speakers: int, num_test_speakers: int, num_dev_speakers: int,
            nj: int, cmd: str, seed: int) -> None:
    """Synthesise the mini corpus (skipped when it is complete) and write its data dirs."""
    config = MiniConfig(num_train_speakers=num_train_speakers, num_test_speakers=num_test_speakers,
                        num_dev_speakers=num_dev_speakers, seed=seed)
    with prep_errors():
        try:
            generate_corpus(Path(corpus_dir), config, nj=nj, cmd=cmd)
        except (FileExistsError, JobError) as err:
            raise click.ClickException(str(err)) from None
        prepare_data_dirs(Path(corpus_dir), Path(data_dir), seed=seed)
