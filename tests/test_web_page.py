"""The web page of ``spk serve`` end to end: the real server process, a real headless Chromium whose
microphone is a WAV file, the tiny model of the ``product`` fixture.

The operator pastes a key (a wrong one first: the page shows the 401), enrolls speaker A from the
microphone, verifies A from the microphone with another utterance of A (ACCEPT) and a claim of A with a
file of speaker B (REJECT), identifies A from a file, sees a non-audio upload refused (415), lists the
speakers and deletes A.
The utterances are chosen with the Python API (:class:`spk.api.SpeakerModel`, what the server runs) so
that both decisions hold with margin for the tiny model. The microphone's WAV file is replaced between the
two recordings: Chromium reads it again, from its start, each time the page opens the microphone.
Screenshots, the server's log, the browser's console and chromedriver's log are kept in a folder the test
prints (and copies to ``$SPK_ARTEFACTS/web_page`` when that variable is set).

Chromium and chromedriver are Debian's (``tools/chromium_local.sh`` installs them as root); where they
cannot be had the test skips, except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.chromium_browser import ChromiumUnavailable, chromium_paths, start_chromium
from tests.serve_helpers import ServerProcess

ENROLL_S, CLAIM_S = 4, 3  # the longest enrollment and the verification the microphone records (seconds)
MARGIN = 0.02  # how far from the threshold the chosen utterances' predicted scores must be
WAIT_S = 30  # the longest wait for one step of the page
SERVER_START_S = 90


@pytest.fixture(scope="module")
def chromium():
    """(chromium, chromedriver) paths, installed when needed and possible; skip (fail in CI) otherwise."""
    try:
        return chromium_paths()
    except ChromiumUnavailable as error:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must run the browser test: {error}", pytrace=False)
        pytest.skip(str(error))


@dataclass(frozen=True)
class Voices:
    """What the microphone and the file input say, and the decisions the Python API predicts."""

    speaker: str  # A
    enroll: np.ndarray  # A's enrollment recording (16 kHz), a whole number of seconds
    claim: np.ndarray  # another utterance of A, verified from the microphone
    impostor: str  # B's utterance (a file), claimed to be A
    scores: tuple[float, float]  # the lowest score of the claim and the highest of the impostor predicted
    threshold: float


def _whole_seconds(samples: np.ndarray, rate: int, most: int) -> np.ndarray:
    # the page records whole seconds; the file (looped by Chromium) is cut to what it will hear
    return samples[: min(len(samples) // rate, most) * rate]


def _late(samples: np.ndarray, shift_s: float, rate: int) -> np.ndarray:
    """The recording the page gets when the microphone starts ``shift_s`` late (the same length)."""
    shift = round(shift_s * rate)
    return np.concatenate([np.zeros(shift, samples.dtype), samples])[: len(samples)] if shift else samples


def pick_voices(product, model) -> Voices:
    """A test speaker A (two utterances enrolled as one recording), another utterance of A and the utterance
    of another speaker B that scores lowest against A (the microphone's recordings cut to :data:`ENROLL_S`
    and :data:`CLAIM_S` seconds), such that the API accepts the first and rejects the second by at least
    :data:`MARGIN` at the EER threshold, also when the fake microphone starts up to 40 ms late (it does
    by a few tens of ms, and the tiny model's scores move by up to 0.03 with that)."""
    rate = model.feature_config.sample_rate
    threshold = model.threshold("eer")
    speakers = product.speakers()
    whole = {path: model.embed(path) for speaker in speakers for path in product.utts_of(speaker)}
    candidates = []  # (margin without delay, A, enrollment, claim, impostor path)
    for speaker in speakers:
        utts = product.utts_of(speaker)
        enroll = _whole_seconds(np.concatenate([sf.read(path, dtype="float32")[0] for path in utts[:2]]), rate,
                                ENROLL_S)
        reference = model.embed(enroll)
        others = [path for other in speakers if other != speaker for path in product.utts_of(other)]
        impostor_score, impostor = min((model.score(reference, whole[path]), path) for path in others)
        for path in utts[2:]:
            claim = _whole_seconds(sf.read(path, dtype="float32")[0], rate, CLAIM_S)
            if len(claim) == CLAIM_S * rate:
                margin = min(model.score(reference, model.embed(claim)) - threshold, threshold - impostor_score)
                candidates.append((margin, speaker, enroll, claim, impostor))
    candidates.sort(key=lambda candidate: -candidate[0])
    tried = []
    for margin, speaker, enroll, claim, impostor in candidates[:5]:
        delays = (0.0, 0.02, 0.04)
        references = [model.embed(_late(enroll, delay, rate)) for delay in delays]
        claims = [model.embed(_late(claim, delay, rate)) for delay in delays]
        lowest = min(model.score(reference, test) for reference in references for test in claims)
        highest = max(model.score(reference, whole[impostor]) for reference in references)
        tried.append(f"{speaker}: {lowest:.3f}/{highest:.3f}")
        if lowest >= threshold + MARGIN and highest <= threshold - MARGIN:
            return Voices(speaker, enroll, claim, impostor, (lowest, highest), threshold)
    pytest.fail(f"no test speaker of the tiny model is accepted and its best impostor rejected by {MARGIN} at the "
                f"EER threshold {threshold:.3f} (lowest same/highest impostor scores: {', '.join(tried)}); the "
                "tiny model has changed: see tests/product_model.py")


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    # Chromium's fake microphone reads 16-bit PCM WAV; written aside and renamed so it never sees half a file
    partial = path.with_suffix(".partial.wav")
    sf.write(partial, samples, rate, subtype="PCM_16")
    os.replace(partial, path)


def _create_key(db: Path, exp: Path) -> str:
    """An admin key made with ``spk keys create`` (in this process, through click: the same command)."""
    from click.testing import CliRunner

    from spk.cli import main

    result = CliRunner().invoke(main, ["keys", "create", "--db", str(db), "--name", "web page test",
                                       "--scope", "admin", "--model", str(exp)], prog_name="spk")
    assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
    return result.stdout.strip().splitlines()[0]


class Page:
    """The browser on the page: find, type, click, wait and keep screenshots."""

    def __init__(self, driver, screens: Path):
        self.driver = driver
        self.screens = screens
        self.shots: list[str] = []

    def el(self, element_id: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id)

    def type(self, element_id: str, text: str) -> None:
        field = self.el(element_id)
        field.clear()
        field.send_keys(text)

    def click(self, element_id: str) -> None:
        self.el(element_id).click()

    def wait(self, what: str, condition) -> None:
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, WAIT_S, poll_frequency=0.05).until(lambda _: condition())
        except TimeoutException:
            self.shot("timeout")
            messages = self.el("messages").text
            pytest.fail(f"the page did not show {what} within {WAIT_S} s; its messages: {messages!r}")

    def state(self, element_id: str) -> str | None:
        return self.el(element_id).get_attribute("data-state")

    def wait_state(self, element_id: str, *states: str) -> str:
        self.wait(f"#{element_id} in state {'/'.join(states)}", lambda: self.state(element_id) in states)
        return self.state(element_id)

    def shot(self, name: str) -> None:
        path = self.screens / f"{len(self.shots) + 1:02d}-{name}.png"
        self.driver.save_screenshot(str(path))
        self.shots.append(path.name)

    def record(self, section: str, seconds: int, screenshot: str | None = None) -> str:
        """Record ``seconds`` from the microphone in a section; returns the page's line about it."""
        self.click(f"{section}-use-mic")
        self.type(f"{section}-seconds", str(seconds))
        self.click(f"{section}-record")
        if screenshot:
            self.wait("the level meter moving", lambda: float(self.el(f"{section}-level")
                                                              .get_attribute("aria-valuenow")) > -60
                      and float(self.el(f"{section}-timer").text.split()[0]) >= 1.0)
            self.shot(screenshot)
        state = self.wait_state(f"{section}-recording", "recorded", "failed")
        assert state == "recorded", self.el(f"{section}-error").text
        return self.el(f"{section}-recording").text


def test_enroll_verify_list_delete_in_chromium(product, model, chromium, tmp_path):
    started = time.monotonic()
    rate = model.feature_config.sample_rate
    screens = tmp_path / "screens"
    screens.mkdir()
    print(f"\nweb page test artefacts (screenshots, logs): {screens}")

    db = tmp_path / "speakers.db"
    key = _create_key(db, product.exp)
    server = ServerProcess(product.exp, db, screens / "server.log", "--workers", "1")
    url = server.url
    mic = tmp_path / "microphone.wav"
    _write_wav(mic, np.zeros(rate, np.float32), rate)  # silence until the voices are chosen
    not_audio = tmp_path / "notes.txt"
    not_audio.write_text("these are not the recordings you are looking for\n" * 50)

    server.launch()
    driver, console = None, []
    try:
        # the browser starts and the voices are chosen while the server loads
        driver = start_chromium(mic, screens / "chromedriver.log")
        voices = pick_voices(product, model)
        _write_wav(mic, voices.enroll, rate)  # read by Chromium when the page starts recording
        picked = time.monotonic()
        server.wait_ready(SERVER_START_S)
        ready_at = time.monotonic()
        page = Page(driver, screens)
        driver.get(url + "/")
        page.wait_state("server-status", "ready")

        # a wrong key: refused with the server's 401, shown plainly
        page.type("api-key", "spk_0123abcd_" + "x" * 43)
        page.click("key-save")
        assert page.wait_state("key-status", "refused") == "refused"
        assert page.el("key-status").text.startswith("Key not usable: HTTP 401: ")
        assert driver.execute_script("return sessionStorage.getItem('spk.apiKey')") is None
        page.shot("key-refused")

        page.type("api-key", key)
        page.click("key-save")
        assert page.wait_state("key-status", "admin", "verify", "refused") == "admin", page.el("key-status").text
        assert driver.execute_script("return sessionStorage.getItem('spk.apiKey')") == key
        assert key not in driver.current_url and page.el("api-key").get_attribute("value") == ""
        page.wait_state("speakers-status", "loaded")

        # enroll A from the microphone
        page.type("enroll-speaker", voices.speaker)
        seconds = len(voices.enroll) // rate
        line = page.record("enroll", seconds, screenshot="enroll-recording")
        assert line.startswith(f"Recorded {seconds}.0 s"), line
        page.click("enroll-submit")
        assert page.wait_state("enroll-result", "done", "failed") == "done", page.el("enroll-error").text
        assert page.el("enroll-result").text == f"Enrolled {voices.speaker}: 1 recording(s) added, 1 in total."
        page.wait("A in the speaker list", lambda: page.el("speakers-status").text == "1 speaker enrolled.")
        rows = page.el("speakers-body").text.splitlines()
        assert len(rows) == 1 and rows[0].startswith(f"{voices.speaker} 1 {seconds}.0 s"), rows
        page.shot("enrolled")

        # verify A from the microphone, now saying another utterance of A: ACCEPT
        _write_wav(mic, voices.claim, rate)
        page.type("verify-speaker", voices.speaker)
        page.record("verify", len(voices.claim) // rate)
        page.click("verify-submit")
        assert page.wait_state("verify-result", "done", "failed") == "done", page.el("verify-error").text
        accept_score = float(page.el("verify-score").text)
        assert page.el("verify-decision").text == "ACCEPT", (accept_score, voices)
        assert "accept" in page.el("verify-decision").get_attribute("class")
        assert float(page.el("verify-threshold-value").text) == pytest.approx(voices.threshold, abs=1e-4)
        assert page.el("verify-llr").text != "" and page.el("verify-operating-point-value").text == "eer"
        page.shot("verify-accept")

        # a claim of A by B, from a file: REJECT
        page.click("verify-use-file")
        page.el("verify-file").send_keys(voices.impostor)
        page.click("verify-submit")
        assert page.wait_state("verify-result", "done", "failed") == "done", page.el("verify-error").text
        reject_score = float(page.el("verify-score").text)
        assert page.el("verify-decision").text == "REJECT", (reject_score, voices)
        assert "reject" in page.el("verify-decision").get_attribute("class")
        page.shot("verify-reject")

        # identify A's verification recording, from a file: A is the best (and only) candidate
        claim_file = tmp_path / "claim.wav"
        _write_wav(claim_file, voices.claim, rate)
        page.click("identify-use-file")
        page.el("identify-file").send_keys(str(claim_file))
        page.click("identify-submit")
        assert page.wait_state("identify-result", "done", "failed") == "done", page.el("identify-error").text
        assert page.el("identify-answer").text == f"Best match: {voices.speaker}"
        candidates = page.el("identify-candidates").find_elements("css selector", "tbody tr")
        assert [row.text.split()[0] for row in candidates] == [voices.speaker]
        page.shot("identify")

        # something that is not audio: the server's 415 and its message
        page.el("identify-file").send_keys(str(not_audio))
        page.click("identify-submit")
        assert page.wait_state("identify-result", "done", "failed") == "failed"
        error = page.el("identify-error").text
        assert error.startswith("HTTP 415: ") and "WAV, FLAC or Ogg" in error, error
        page.shot("error-415")

        # the list, and deleting A (two clicks: the first asks to confirm)
        page.click("speakers-refresh")
        page.wait("the speaker list", lambda: page.state("speakers-status") == "loaded"
                  and page.el("speakers-status").text == "1 speaker enrolled.")
        delete = page.el("speakers-body").find_element("css selector", "button.delete")
        assert delete.get_attribute("aria-label") == f"Delete speaker {voices.speaker}"
        delete.click()
        assert delete.text == f"Really delete {voices.speaker}?"
        delete.click()
        page.wait("the deletion", lambda: page.el("speakers-status").text.startswith(f"Deleted {voices.speaker}."))
        assert not page.el("speakers-table").is_displayed()
        page.wait("the server status", lambda: "0 speaker(s) enrolled" in page.el("server-status").text)
        page.shot("deleted")
        console = driver.get_log("browser")
        # the page's own console: no script error, no policy violation (CSP); only the two refusals asked for
        expected = ("the server responded with a status of 401", "the server responded with a status of 415")
        trouble = [entry["message"] for entry in console
                   if entry["level"] == "SEVERE" and not any(text in entry["message"] for text in expected)]
        assert not trouble, trouble
        print(f"web page test: scores accept {accept_score:.4f} (API predicted at least {voices.scores[0]:.4f}), "
              f"reject {reject_score:.4f} (at most {voices.scores[1]:.4f}), threshold {voices.threshold:.4f}; "
              f"browser started and utterances picked in {picked - started:.1f} s, server ready "
              f"{ready_at - picked:.1f} s later, "
              f"{time.monotonic() - ready_at:.1f} s in the browser, {time.monotonic() - started:.1f} s in all")
    finally:
        if driver is not None:
            try:
                console += driver.get_log("browser")
                (screens / "browser-console.log").write_text(
                    "".join(f"{entry['level']} {entry['message']}\n" for entry in console))
            finally:
                driver.quit()
        status = server.stop(timeout=20)
        artefacts = os.environ.get("SPK_ARTEFACTS")
        if artefacts:
            shutil.copytree(screens, Path(artefacts) / "web_page", dirs_exist_ok=True)
    assert status == 0, f"spk serve exited {status} on SIGTERM:\n{server.log.read_text()[-2000:]}"
