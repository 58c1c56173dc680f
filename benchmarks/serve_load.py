"""Benchmark: ``spk serve`` under concurrent load, then a check of the speaker database it wrote.

``--clients`` simulated clients (asyncio tasks, one ``httpx.AsyncClient`` and one connection
each, all in this process) send requests one after the other for ``--seconds``: by default
70 % verify, 20 % identify and 10 % enroll, with real LibriSpeech speech (clips of
``--clip-seconds``, WAV-encoded once before the run). A share of the enrollments
(``--bad-enroll``) is deliberately bad: a text file (expects 415) or 0.3 s of audio (expects
422). Every enrollment, good or bad, uses its own speaker name, so the database check is exact.
The server runs in its own process: started here (``--model``, ``--db``: ``spk serve ...
--rate-limit 0``) or already running (``--url`` with ``--admin-key`` and ``--verify-key``; add
``--db`` with its database file for the check).

Reported: requests/s, p50/p95/p99 latency (client-side, from sending the request to having read
the whole response; beside it the server's own figures from its JSON log) per kind and overall,
the CPU seconds of this process and of the server, status counts, and errors: any non-2xx answer to a
request meant to succeed, any other status than the expected one for a bad enrollment, and any
transport error. Errors must be zero. Then the database is opened
(:class:`spk.speaker_db.SpeakerDB`) and checked: every acknowledged enrollment is there with its
utterance count, no failed one is, ``PRAGMA integrity_check`` is ok, every speaker model averages
as many utterances as its speaker has rows, and the audit table holds one ``enroll`` row per
acknowledged enrollment and one decision row per 2xx verify or identify (matched by the request id
the server returns in ``X-Request-ID``), and nothing else from the run.

    python benchmarks/serve_load.py --model recipes/librispeech/exp/ge2e_finetune \\
        --db /tmp/load.db --clients 50 --seconds 60 --json-out /tmp/serve_load.json
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --admin-key spk_... --verify-key spk_... \\
        --db speakers.db

Exit status: 0 when there were no errors and the database check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT.parent / "shared" / "data" / "LibriSpeech" / "train-clean-100"
DEFAULT_MIX = {"verify": 0.7, "identify": 0.2, "enroll": 0.1}
KINDS = ("verify", "identify", "enroll", "enroll_bad")
SHORT_AUDIO_S = 0.3  # under spk.api.MIN_AUDIO_S: the server must answer 422
_REQUEST_ID = re.compile(r"request ([0-9a-f]+)")


# --- the audio sent -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clips:
    """What the clients send, encoded once: speech clips of different speakers, and two bad uploads."""

    speech: list[bytes]  # WAV, one LibriSpeech speaker each
    seconds: float
    short: bytes  # WAV of SHORT_AUDIO_S seconds of speech
    text: bytes  # not audio at all


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    """``samples`` as 16-bit PCM WAV bytes."""
    import io

    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def load_clips(corpus: Path = DEFAULT_CORPUS, count: int = 8, seconds: float = 3.0) -> Clips:
    """``count`` clips of ``seconds`` of real speech, from the first file of ``count`` LibriSpeech speakers.

    Each clip starts 0.5 s into its file (past the leading silence), so it is speech throughout.
    """
    import soundfile as sf

    if not corpus.is_dir():
        raise SystemExit(f"real speech is needed: {corpus} is not a directory (give --corpus with a "
                         "LibriSpeech train-clean-100 dir: speaker/chapter/*.flac)")
    speech, short = [], None
    for speaker_dir in sorted(p for p in corpus.iterdir() if p.is_dir()):
        files = sorted(speaker_dir.glob("*/*.flac"))
        if not files:
            continue
        samples, rate = sf.read(str(files[0]), dtype="float32")
        start = int(0.5 * rate)
        clip = samples[start:start + int(seconds * rate)]
        if len(clip) < int(seconds * rate):
            continue
        speech.append(wav_bytes(clip, rate))
        if short is None:
            short = wav_bytes(clip[:int(SHORT_AUDIO_S * rate)], rate)
        if len(speech) == count:
            break
    if len(speech) < count:
        raise SystemExit(f"{corpus} has only {len(speech)} speakers with a file of {seconds:g} s or more; "
                         f"{count} are needed (give fewer with --num-clips)")
    text = b"This is a text file, not a recording. A server must refuse it with 415.\n" * 20
    return Clips(speech, seconds, short, text)


# --- the load -------------------------------------------------------------------------------------

@dataclass
class Outcome:
    """One request: what it was, what it expected, what it got, and how long it took."""

    kind: str  # verify, identify, enroll, enroll_bad
    expected: int | None  # None: any 2xx; else this exact status (a deliberately bad enrollment)
    status: int | None  # None: a transport error (no answer)
    latency_s: float
    start_s: float  # since the start of the run
    speaker: str | None = None
    files: int = 0
    request_id: str | None = None
    error: str | None = None  # the transport error, or the body of an unexpected answer

    @property
    def as_expected(self) -> bool:
        if self.status is None:
            return False
        if self.expected is None:
            return 200 <= self.status < 300
        return self.status == self.expected

    @property
    def acknowledged(self) -> bool:
        """The server said it was done (a 2xx)."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class LoadPlan:
    """What :func:`run_load` sends, to whom, for how long."""

    url: str
    admin_key: str
    verify_key: str
    clips: Clips
    speakers: list[str]  # enrolled before the run: the claims of verify requests
    clients: int = 50
    seconds: float = 60.0
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))
    bad_enroll: float = 0.2  # share of enrollments that are deliberately bad
    max_files: int = 3  # a good enrollment sends 1 to max_files clips
    prefix: str = "load"  # of the speaker names made by the run (unique per run)
    timeout_s: float = 120.0
    seed: int = 0


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _one_request(client, plan: LoadPlan, rng: random.Random, kind: str, name: str, t0: float) -> Outcome:
    clips = plan.clips
    expected, speaker, files = None, None, 0
    if kind == "verify":
        speaker = rng.choice(plan.speakers)
        files = 1
        request = {"url": "/v1/verify", "headers": _auth(plan.verify_key), "data": {"speaker": speaker},
                   "files": [("audio", ("clip.wav", rng.choice(clips.speech), "audio/wav"))]}
    elif kind == "identify":
        files = 1
        request = {"url": "/v1/identify", "headers": _auth(plan.verify_key), "data": {"top_k": "3"},
                   "files": [("audio", ("clip.wav", rng.choice(clips.speech), "audio/wav"))]}
    else:
        speaker = name
        if rng.random() < plan.bad_enroll:
            kind = "enroll_bad"
            if rng.random() < 0.5:
                expected, upload = 415, ("notes.txt", clips.text, "text/plain")
            else:
                expected, upload = 422, ("short.wav", clips.short, "audio/wav")
            uploads = [("audio", upload)]
        else:
            uploads = [("audio", (f"clip{i}.wav", data, "audio/wav"))
                       for i, data in enumerate(rng.sample(clips.speech, rng.randint(1, plan.max_files)))]
        files = len(uploads)
        request = {"url": "/v1/enroll", "headers": _auth(plan.admin_key), "data": {"speaker": speaker},
                   "files": uploads}
    started = time.perf_counter()
    try:
        response = await client.post(**request)
    except Exception as error:  # noqa: BLE001 - every transport failure is an outcome to report
        return Outcome(kind, expected, None, time.perf_counter() - started, started - t0, speaker, files,
                       error=f"{type(error).__name__}: {error}")
    latency = time.perf_counter() - started
    outcome = Outcome(kind, expected, response.status_code, latency, started - t0, speaker, files,
                      response.headers.get("x-request-id"))
    if not outcome.as_expected:
        outcome.error = response.text[:300]
    return outcome


async def _client(index: int, plan: LoadPlan, t0: float, stop: threading.Event, outcomes: list[Outcome]) -> None:
    import httpx

    rng = random.Random(plan.seed * 100_003 + index)
    kinds, weights = zip(*plan.mix.items())
    deadline = t0 + plan.seconds
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with httpx.AsyncClient(base_url=plan.url, timeout=plan.timeout_s, limits=limits) as client:
        number = 0
        while time.perf_counter() < deadline and not stop.is_set():
            kind = rng.choices(kinds, weights)[0]
            name = f"{plan.prefix}-c{index:03d}-{number:05d}"
            number += 1
            outcomes.append(await _one_request(client, plan, rng, kind, name, t0))


def run_load(plan: LoadPlan, stop: threading.Event | None = None,
             outcomes: list[Outcome] | None = None) -> tuple[list[Outcome], float]:
    """Run ``plan``'s clients until ``plan.seconds`` pass or ``stop`` is set; returns ``(outcomes, wall seconds)``.

    No request starts after the end; those in flight are waited for (and counted).
    ``outcomes``, when given, is filled as requests complete (another thread may watch it).
    """
    if plan.mix.get("verify") and not plan.speakers:
        raise ValueError("verify requests need enrolled speakers to claim: give LoadPlan.speakers")
    stop = stop or threading.Event()
    outcomes = [] if outcomes is None else outcomes

    async def everyone():
        t0 = time.perf_counter()
        await asyncio.gather(*(_client(i, plan, t0, stop, outcomes) for i in range(plan.clients)))
        return time.perf_counter() - t0

    return outcomes, asyncio.run(everyone())


def enroll_speakers(url: str, admin_key: str, clips: Clips, prefix: str, count: int = 4) -> dict[str, int]:
    """Enroll ``count`` speakers (two clips each) before the run; returns ``{name: utterances}``."""
    import httpx

    enrolled = {}
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(count):
            name = f"{prefix}-base-{i}"
            pair = [clips.speech[(2 * i) % len(clips.speech)], clips.speech[(2 * i + 1) % len(clips.speech)]]
            response = client.post("/v1/enroll", headers=_auth(admin_key), data={"speaker": name},
                                   files=[("audio", (f"base{j}.wav", data, "audio/wav"))
                                          for j, data in enumerate(pair)])
            if response.status_code != 201:
                raise SystemExit(f"enrolling {name} before the run failed: {response.status_code} {response.text}")
            enrolled[name] = response.json()["utterances"]
    return enrolled


# --- the figures ----------------------------------------------------------------------------------

def _latencies(outcomes: list[Outcome]) -> dict:
    answered = np.array([o.latency_s for o in outcomes if o.status is not None])
    if not len(answered):
        return {"count": 0}
    p50, p95, p99 = np.percentile(answered, [50, 95, 99]) * 1000
    return {"count": len(answered), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1), "p99_ms": round(p99, 1),
            "mean_ms": round(answered.mean() * 1000, 1), "max_ms": round(answered.max() * 1000, 1)}


def summarize(outcomes: list[Outcome], wall_s: float) -> dict:
    """Requests/s, latency percentiles per kind and overall, status counts and errors of a run."""
    answered = [o for o in outcomes if o.status is not None]
    errors = [o for o in outcomes if not o.as_expected]
    kinds = {}
    for kind in KINDS:
        mine = [o for o in outcomes if o.kind == kind]
        if mine:
            kinds[kind] = {**_latencies(mine), "requests_per_s": round(len(mine) / wall_s, 2),
                           "statuses": dict(sorted(Counter(str(o.status) for o in mine).items())),
                           "errors": sum(not o.as_expected for o in mine)}
    return {"requests": len(outcomes), "answered": len(answered), "wall_s": round(wall_s, 2),
            "requests_per_s": round(len(outcomes) / wall_s, 2), "overall": _latencies(outcomes), "kinds": kinds,
            "statuses": dict(sorted(Counter(str(o.status) for o in outcomes).items())),
            "errors": len(errors), "transport_errors": sum(o.status is None for o in outcomes),
            "error_examples": [asdict(o) for o in errors[:5]]}


def server_latencies(log: Path, outcomes: list[Outcome]) -> dict:
    """p50/p95/p99 of the latencies the server logged (its JSON lines) for the run's answered requests.

    The server measures from reading the request to sending the response; the difference
    from the client's figures is the time in the network stack and in this process.
    """
    kind_of = {o.request_id: o.kind for o in outcomes if o.request_id}
    found: dict[str, list[float]] = {}
    with open(log, errors="replace") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            kind = kind_of.get(record.get("request_id")) if isinstance(record, dict) else None
            if kind is not None and "latency_ms" in record:
                found.setdefault(kind, []).append(record["latency_ms"])
                found.setdefault("overall", []).append(record["latency_ms"])
    figures = {}
    for kind in [k for k in (*KINDS, "overall") if k in found]:
        values = found[kind]
        p50, p95, p99 = np.percentile(values, [50, 95, 99])
        figures[kind] = {"count": len(values), "p50_ms": round(p50, 1), "p95_ms": round(p95, 1),
                         "p99_ms": round(p99, 1)}
    return figures


def format_table(summary: dict) -> str:
    """The summary as a plain-text table."""
    lines = [(f"{'kind':<11} {'count':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8} "
              f"{'errors':>6}  statuses")]
    rows = [(kind, data) for kind, data in summary["kinds"].items()]
    rows.append(("overall", {**summary["overall"], "requests_per_s": summary["requests_per_s"],
                             "errors": summary["errors"], "statuses": summary["statuses"]}))
    for kind, data in rows:
        count = data.get("count", 0)
        figures = (f"{data['p50_ms']:>8.1f} {data['p95_ms']:>8.1f} {data['p99_ms']:>8.1f} {data['max_ms']:>8.1f}"
                   if count else f"{'-':>8} {'-':>8} {'-':>8} {'-':>8}")
        lines.append(f"{kind:<11} {count:>6} {data['requests_per_s']:>7.1f} {figures} {data['errors']:>6}  "
                     + " ".join(f"{status}:{n}" for status, n in data["statuses"].items()))
    return "\n".join(lines)


# --- the database check ---------------------------------------------------------------------------

def audit_baseline(db_path: Path) -> int:
    """The id of the newest audit row (the run's rows come after it)."""
    from spk.speaker_db import SpeakerDB

    with SpeakerDB.open(db_path) as db:
        newest = db.audit_records(limit=1)
    return newest[-1].id if newest else 0


def check_database(db_path: Path, outcomes: list[Outcome], before: dict[str, int], audit_after: int,
                   in_flight_ok: bool = False, prefix: str | None = None) -> dict:
    """Check the database against what the server answered (module docstring); returns a report with ``ok``.

    ``before``: speakers enrolled before the run with their utterance counts (they must be
    unchanged). ``audit_after``: the newest audit row id before the run. With
    ``in_flight_ok``, a request that got no answer (a killed server) may have landed or not,
    but all of it or none: an enrollment's speaker, utterances, model and audit row together.
    ``prefix``: only speakers named ``prefix-...`` are the run's (a shared database); without
    it, every speaker not in ``before`` must be an enrollment of ``outcomes``.
    """
    from spk.speaker_db import SpeakerDB

    problems: list[str] = []
    with SpeakerDB.open(db_path) as db:
        speakers = {info.name: info.num_utterances for info in db.speakers()}
        records = db.audit_records(after_id=audit_after)
    with sqlite3.connect(f"{Path(db_path).absolute().as_uri()}?mode=ro", uri=True) as conn:
        integrity = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        models = dict(conn.execute("SELECT s.name, m.num_utterances FROM speakers s "
                                   "LEFT JOIN speaker_models m ON m.speaker_id = s.id"))
    conn.close()
    if integrity != ["ok"]:
        problems.append(f"PRAGMA integrity_check: {integrity[:5]}")
    for name, count in speakers.items():
        if models.get(name) != count:
            problems.append(f"speaker {name}: its model averages {models.get(name)} utterance(s), it has {count}")

    by_request: dict[str, list] = {}
    enroll_rows: dict[str, list] = {}
    for record in records:
        match = _REQUEST_ID.search(record.detail)
        if match:
            by_request.setdefault(match.group(1), []).append(record)
        if record.action == "enroll":
            enroll_rows.setdefault(record.speaker, []).append(record)

    for name, count in before.items():
        if speakers.get(name) != count:
            problems.append(f"speaker {name} enrolled before the run had {count} utterance(s), now "
                            f"{speakers.get(name)}")
    enrollments = [o for o in outcomes if o.kind.startswith("enroll")]
    acknowledged = [o for o in enrollments if o.acknowledged]
    failed = [o for o in enrollments if o.status is not None and not o.acknowledged]
    in_flight = [o for o in enrollments if o.status is None]
    landed_in_flight = 0
    for o in acknowledged:
        if speakers.get(o.speaker) != o.files:
            problems.append(f"acknowledged enrollment {o.speaker} ({o.files} file(s), request {o.request_id}): "
                            f"the database has {speakers.get(o.speaker)} utterance(s)")
        rows = [r for r in by_request.get(o.request_id, []) if r.action == "enroll" and r.speaker == o.speaker]
        if len(rows) != 1 or len(enroll_rows.get(o.speaker, [])) != 1:
            problems.append(f"acknowledged enrollment {o.speaker} (request {o.request_id}) has {len(rows)} audit "
                            f"row(s) with its request id, {len(enroll_rows.get(o.speaker, []))} in all")
    for o in failed:
        if o.speaker in speakers or o.speaker in enroll_rows or o.request_id in by_request:
            problems.append(f"failed enrollment {o.speaker} ({o.status}, request {o.request_id}) left "
                            f"{speakers.get(o.speaker, 0)} utterance(s) and "
                            f"{len(by_request.get(o.request_id, []))} audit row(s)")
    for o in in_flight:
        present = o.speaker in speakers
        landed_in_flight += present
        complete = speakers.get(o.speaker) == o.files and len(enroll_rows.get(o.speaker, [])) == 1
        if (present and not complete) or (not present and o.speaker in enroll_rows):
            problems.append(f"enrollment {o.speaker} without an answer ({o.error}): "
                            f"{speakers.get(o.speaker, 0)} utterance(s) of {o.files}, "
                            f"{len(enroll_rows.get(o.speaker, []))} audit row(s)")
    explained = set(before) | {o.speaker for o in acknowledged} | {o.speaker for o in in_flight}
    strangers = sorted(name for name in speakers if name not in explained
                       and (prefix is None or name.startswith(prefix + "-")))
    if strangers:
        problems.append(f"{len(strangers)} speaker(s) nobody acknowledged are enrolled: {strangers[:5]}")

    decisions = [o for o in outcomes if o.kind in ("verify", "identify")]
    decided = [o for o in decisions if o.acknowledged]
    for o in decided:
        rows = [r for r in by_request.get(o.request_id, []) if r.action == o.kind]
        if len(rows) != 1:
            problems.append(f"{o.kind} request {o.request_id} ({o.status}) has {len(rows)} audit row(s)")
    for o in decisions:
        if o.status is not None and not o.acknowledged and o.request_id in by_request:
            problems.append(f"{o.kind} request {o.request_id} answered {o.status} but has an audit row")
    decision_rows = sum(r.action in ("verify", "identify") for r in records)
    undecided = sum(o.status is None for o in decisions)
    if not (len(decided) <= decision_rows <= len(decided) + (undecided if in_flight_ok else 0)):
        problems.append(f"{decision_rows} decision row(s) in the audit table after the run for {len(decided)} "
                        f"answered verify/identify request(s)")
    return {"ok": not problems, "problems": problems[:20], "problem_count": len(problems),
            "integrity_check": integrity[0] if len(integrity) == 1 else integrity[:5],
            "speakers": len(speakers), "enrollments_acknowledged": len(acknowledged),
            "enrollments_failed": len(failed), "enrollments_in_flight": len(in_flight),
            "in_flight_landed": landed_in_flight, "decisions_acknowledged": len(decided),
            "audit_rows_after_run_start": len(records), "audit_decision_rows": decision_rows}


# --- a server of our own --------------------------------------------------------------------------

def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def make_keys(model: str, db_path: Path) -> tuple[str, str]:
    """An admin and a verify key in ``db_path`` (made with ``model`` when missing), through the library."""
    from spk.api import SpeakerModel
    from spk.service.auth import create_key

    with SpeakerModel.load(model).open_db(db_path, create=True) as db:
        return create_key(db, "serve_load admin", "admin")[0], create_key(db, "serve_load verify", "verify")[0]


def wait_ready(url: str, process: subprocess.Popen | None = None, timeout: float = 120.0) -> None:
    """Wait until ``url``/v1/ready answers 200."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise SystemExit(f"spk serve exited with {process.returncode} before it was ready (see its log)")
        try:
            if httpx.get(f"{url}/v1/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} was not ready within {timeout:g} s")


def start_server(model: str, db_path: Path, log: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """``spk serve`` in its own process on a free port of 127.0.0.1, no rate limit; returns ``(process, url)``."""
    port = free_port()
    command = [sys.executable, "-m", "spk", "serve", "--model", model, "--db", str(db_path), "--port", str(port),
               "--rate-limit", "0", *options]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, process)
    return process, url


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by process ``pid`` (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def stop_server(process: subprocess.Popen, timeout: float = 60.0) -> int:
    """SIGTERM, then wait; returns the exit status (0 after a graceful stop)."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return -9


# --- the command ----------------------------------------------------------------------------------

def _mix(text: str) -> dict[str, float]:
    try:
        shares = {kind: float(share) for kind, share in (part.split("=") for part in text.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--mix is 'verify=70,identify=20,enroll=10', not {text!r}") from None
    if set(shares) - {"verify", "identify", "enroll"} or not sum(shares.values()) > 0:
        raise argparse.ArgumentTypeError(f"--mix takes verify, identify and enroll with positive shares: {text!r}")
    return shares


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Start 'spk serve' with this model (with --db).")
    parser.add_argument("--db", type=Path, help="The speaker database: served (with --model) or checked (with --url).")
    parser.add_argument("--url", help="A running server (with --admin-key and --verify-key) instead of starting one.")
    parser.add_argument("--admin-key", default=os.environ.get("SPK_ADMIN_KEY"), help="[env SPK_ADMIN_KEY]")
    parser.add_argument("--verify-key", default=os.environ.get("SPK_VERIFY_KEY"), help="[env SPK_VERIFY_KEY]")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--mix", type=_mix, default=dict(DEFAULT_MIX), help="Default: verify=70,identify=20,enroll=10")
    parser.add_argument("--bad-enroll", type=float, default=0.2, help="Share of enrollments that are bad [0.2].")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="LibriSpeech train-clean-100 dir.")
    parser.add_argument("--num-clips", type=int, default=8)
    parser.add_argument("--clip-seconds", type=float, default=3.0)
    parser.add_argument("--base-speakers", type=int, default=4, help="Speakers enrolled before the run.")
    parser.add_argument("--server-option", action="append", default=[], metavar="OPTION",
                        help="Passed on to 'spk serve' (repeat; e.g. --server-option=--workers=2).")
    parser.add_argument("--log", type=Path, help="The started server's log [DB path + .serve.log].")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    if args.url is None and (args.model is None or args.db is None):
        parser.error("give --model and --db to start a server, or --url with --admin-key and --verify-key")
    if args.url is not None and not (args.admin_key and args.verify_key):
        parser.error("--url needs --admin-key and --verify-key (or SPK_ADMIN_KEY and SPK_VERIFY_KEY)")

    clips = load_clips(args.corpus, args.num_clips, args.clip_seconds)
    process = None
    if args.url is None:
        args.admin_key, args.verify_key = make_keys(args.model, args.db)
        log = args.log or args.db.with_name(args.db.name + ".serve.log")
        process, args.url = start_server(args.model, args.db, log, *args.server_option)
        print(f"spk serve (pid {process.pid}) on {args.url}, log {log}", file=sys.stderr)
    prefix = f"load{time.strftime('%H%M%S')}{random.randrange(16 ** 4):04x}"
    exit_status = None
    try:
        before = enroll_speakers(args.url, args.admin_key, clips, prefix, args.base_speakers)
        audit_after = audit_baseline(args.db) if args.db else 0
        plan = LoadPlan(args.url, args.admin_key, args.verify_key, clips, list(before), clients=args.clients,
                        seconds=args.seconds, mix=args.mix, bad_enroll=args.bad_enroll, prefix=prefix, seed=args.seed)
        load_before = os.getloadavg()
        cpu_before = time.process_time()
        server_cpu_before = process_cpu_s(process.pid) if process is not None else None
        outcomes, wall = run_load(plan)
        client_cpu = time.process_time() - cpu_before
        server_cpu = process_cpu_s(process.pid) if process is not None else None
        if server_cpu is not None and server_cpu_before is not None:
            server_cpu -= server_cpu_before
        load_after = os.getloadavg()
    finally:
        if process is not None:
            exit_status = stop_server(process)
    summary = summarize(outcomes, wall)
    summary.update({"clients": args.clients, "seconds": args.seconds, "mix": args.mix, "clip_seconds": args.clip_seconds,
                    "client_cpu_s": round(client_cpu, 2),
                    "server_cpu_s": None if server_cpu is None else round(server_cpu, 2), "loadavg_before": load_before, "loadavg_after": load_after,
                    "cores": os.cpu_count(), "server_exit_status": exit_status, "url": args.url})
    print(format_table(summary))
    if process is not None:
        summary["server_side"] = server_latencies(log, outcomes)
        print("server-side (its log): " + "; ".join(
            f"{kind} p50 {f['p50_ms']:.1f} p95 {f['p95_ms']:.1f} p99 {f['p99_ms']:.1f} ms"
            for kind, f in summary["server_side"].items()))
    print(f"client process CPU {client_cpu:.1f} s" + (f", server process CPU {server_cpu:.1f} s" if server_cpu else "")
          + f" over {wall:.1f} s; load average before {load_before[0]:.2f}, "
          f"after {load_after[0]:.2f}" + (f"; server exited {exit_status} after SIGTERM" if process else ""))
    for example in summary["error_examples"]:
        print(f"error: {example['kind']} {example['speaker']} -> {example['status']}: {example['error']}")
    if args.db is not None:
        summary["database"] = check_database(args.db, outcomes, before, audit_after, prefix=prefix)
        db = summary["database"]
        print(f"database {args.db}: {'ok' if db['ok'] else 'PROBLEMS'}; integrity_check {db['integrity_check']}; "
              f"{db['enrollments_acknowledged']} acknowledged enrollment(s) all present, "
              f"{db['enrollments_failed']} failed one(s) absent; {db['audit_decision_rows']} decision row(s) for "
              f"{db['decisions_acknowledged']} answered verify/identify; {db['speakers']} speakers")
        for problem in db["problems"]:
            print(f"database problem: {problem}")
    print(json.dumps({k: v for k, v in summary.items() if k != "error_examples"}))
    if args.json_out:
        args.json_out.write_text(json.dumps(summary, indent=2) + "\n")
    good = summary["errors"] == 0 and summary.get("database", {"ok": True})["ok"]
    if process is not None and exit_status != 0:
        print(f"spk serve exited {exit_status} after SIGTERM, not 0", file=sys.stderr)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
