"""Debian's headless Chromium driven by selenium, for the browser test of the ``spk serve`` page.

:func:`chromium_paths` finds ``chromium`` and ``chromedriver``, installing the Debian packages with
``tools/chromium_local.sh install`` where they are missing and that is possible (root and apt-get); it
raises :class:`ChromiumUnavailable` with the reason and the remedy where it is not.
:func:`start_chromium` starts a headless browser whose microphone is a WAV file
(``--use-fake-device-for-media-stream --use-file-for-fake-audio-capture``): Chromium reads the file
again at each capture start (each ``getUserMedia``), from its beginning, so a test can change what the
"microphone" says between two recordings by replacing the file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "tools" / "chromium_local.sh"
INSTALL_TIMEOUT_S = 600  # a first install downloads about 80 MB of packages


class ChromiumUnavailable(RuntimeError):
    """Chromium or chromedriver cannot run here; the message says why and how to get them."""


def chromium_paths() -> tuple[str, str]:
    """(chromium, chromedriver) executables, installed first when they are missing and can be installed."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    try:
        import selenium  # noqa: F401
    except ImportError:
        raise ChromiumUnavailable("the browser test needs selenium: pip install -e '.[test]'") from None
    try:
        result = subprocess.run(["bash", str(SCRIPT), "install"], check=False, capture_output=True, text=True,
                                timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise ChromiumUnavailable(f"{SCRIPT} install took over {INSTALL_TIMEOUT_S} s") from None
    if result.returncode != 0:
        raise ChromiumUnavailable(f"Chromium is not available: {result.stderr.strip()[-1500:]}")
    paths = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    return paths["chromium"], paths["chromedriver"]


def start_chromium(microphone_wav: Path, log_path: Path, width: int = 1400, height: int = 1800):
    """A headless Chromium (selenium ``webdriver.Chrome``) whose microphone plays ``microphone_wav``
    (16-bit PCM WAV, looped) and which grants the microphone without asking; chromedriver logs to
    ``log_path``. The caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", f"--window-size={width},{height}",
                     "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
                     f"--use-file-for-fake-audio-capture={microphone_wav}",
                     "--autoplay-policy=no-user-gesture-required",
                     "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run", "--disable-extensions",
                     "--hide-scrollbars", "--force-device-scale-factor=1"):
        options.add_argument(argument)
    if os.geteuid() == 0:  # Chromium refuses to run as root with its sandbox
        options.add_argument("--no-sandbox")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(driver, service_args=["--log-level=WARNING"], log_output=str(log_path))
    return webdriver.Chrome(service=service, options=options)
