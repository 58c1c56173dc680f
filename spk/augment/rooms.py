"""Room impulse responses of simulated shoebox rooms (the RIRs of the built-in augmentation sources).

The early part (the first 80 ms after the direct sound) is simulated by the
image-source method (Allen and Berkley, 1979) with frequency-independent wall
absorption; the late part is Gaussian noise decaying at the room's Eyring RT60 at
the level of the diffuse field (Sabine's room constant), faded in over the early
part, as hybrid room simulators do. The direct path falls on a whole sample and
is the largest sample, so :func:`spk.augment.ops.reverberate` aligns reverberated
speech with the clean speech.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal

__all__ = ["ROOM_SIZES", "SPEED_OF_SOUND", "direct_index", "direct_peaked_rir", "eyring_rt60", "image_source_rir",
           "random_room"]

RATE = 16000
SPEED_OF_SOUND = 343.0
# name -> (range of the two floor dimensions in metres, range of the height)
ROOM_SIZES = {
    "smallroom": ((2.0, 10.0), (2.0, 5.0)),
    "mediumroom": ((10.0, 30.0), (2.0, 5.0)),
    "largeroom": ((30.0, 50.0), (2.0, 5.0)),
}
ABSORPTION = (0.2, 0.8)
EARLY_SECONDS = 0.08       # image sources up to this long after the direct sound
MAX_RIR_SECONDS = 1.0      # the tail is cut here (it is 60 dB down at RT60)
WALL_MARGIN = 0.3          # metres between a wall and the source or microphone
MIN_DISTANCE = 0.5         # metres between source and microphone
SINC_HALF_WIDTH = 8        # taps either side of a fractional-delay impulse


def eyring_rt60(size: tuple[float, float, float], absorption: float) -> float:
    """Eyring's reverberation time (s) of a shoebox room with walls of one absorption coefficient."""
    x, y, z = size
    volume, surface = x * y * z, 2 * (x * y + x * z + y * z)
    return 0.161 * volume / (-surface * math.log(1.0 - absorption))


def _images(length: float, source: float, mic: float, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis: image-to-microphone offsets and reflection counts of every image within ``horizon``."""
    count = int(math.ceil(horizon / (2 * length))) + 1
    n = np.arange(-count, count + 1)
    offsets, reflections = [], []
    for parity in (0, 1):
        offsets.append((1 - 2 * parity) * source + 2 * n * length - mic)
        reflections.append(np.abs(n - parity) + np.abs(n))
    return np.concatenate(offsets), np.concatenate(reflections)


def image_source_rir(size: tuple[float, float, float], source: tuple[float, float, float],
                     mic: tuple[float, float, float], absorption: float, rng: np.random.Generator, *,
                     rate: int = RATE, early_seconds: float = EARLY_SECONDS,
                     max_seconds: float = MAX_RIR_SECONDS) -> np.ndarray:
    """The impulse response from ``source`` to ``mic`` in a shoebox room (see the module docstring).

    ``size``, ``source`` and ``mic`` are in metres; ``absorption`` is the energy
    absorption coefficient of every wall (0-1). The direct path is at sample
    :func:`direct_index` exactly (a one-sample impulse there before the 40 Hz
    high-pass), and the result is scaled to peak 1.
    """
    if not 0.0 < absorption < 1.0:
        raise ValueError(f"absorption must be between 0 and 1, not {absorption}")
    beta = math.sqrt(1.0 - absorption)
    distance = math.dist(source, mic)
    rt60 = eyring_rt60(size, absorption)
    horizon = distance + SPEED_OF_SOUND * early_seconds
    axes = [_images(length, s, m, horizon) for length, s, m in zip(size, source, mic)]
    (dx, rx), (dy, ry), (dz, rz) = axes
    squared = dx[:, None, None] ** 2 + dy[None, :, None] ** 2 + dz[None, None, :] ** 2
    order = rx[:, None, None] + ry[None, :, None] + rz[None, None, :]
    keep = squared <= horizon**2
    d = np.sqrt(squared[keep])
    amplitude = beta ** order[keep] / (4 * math.pi * d)
    direct_delay = distance / SPEED_OF_SOUND * rate
    # Shift every arrival by the same fraction of a sample so that the direct path falls on direct_index().
    delay = d / SPEED_OF_SOUND * rate + (direct_index(source, mic, rate) - direct_delay)

    length = int(min(max_seconds, direct_delay / rate + 1.2 * rt60) * rate) + SINC_HALF_WIDTH + 1
    taps = np.arange(-SINC_HALF_WIDTH, SINC_HALF_WIDTH + 1)
    index = np.floor(delay).astype(np.int64)[:, None] + taps[None, :]
    offset = index - delay[:, None]
    weights = np.sinc(offset) * (0.5 + 0.5 * np.cos(np.pi * offset / (SINC_HALF_WIDTH + 1)))
    inside = (index >= 0) & (index < length)
    rir = np.bincount(index[inside], weights=(weights * amplitude[:, None])[inside], minlength=length)

    # Late reverberation: diffuse field (room constant R = S a / (1 - a)) decaying at the RT60.
    x, y, z = size
    surface = 2 * (x * y + x * z + y * z)
    direct_energy = (1 / (4 * math.pi * distance)) ** 2
    reverberant_energy = direct_energy * 16 * math.pi * distance**2 * (1 - absorption) / (surface * absorption)
    rate_of_decay = 6.9078 * 2 / rt60  # energy falls by 60 dB (ln 10^6 = 13.8) in rt60
    start = direct_index(source, mic, rate) + 1
    if start < length:
        t = (np.arange(start, length) - start + 1) / rate
        power = reverberant_energy * rate_of_decay / rate * np.exp(-rate_of_decay * t)
        # Fade the diffuse tail in over the early part, where the image sources are exact.
        fade = np.sin(0.5 * np.pi * np.minimum(t / early_seconds, 1.0)) ** 2
        rir[start:] += fade * np.sqrt(power) * rng.standard_normal(length - start)
    # No DC: walls do not reflect it as the frequency-independent model assumes.
    rir = signal.sosfilt(signal.butter(2, 40.0, "highpass", fs=rate, output="sos"), rir)
    return (rir / np.max(np.abs(rir))).astype(np.float32)


@dataclass(frozen=True)
class _Placement:
    size: tuple[float, float, float]
    absorption: float
    source: tuple[float, float, float]
    mic: tuple[float, float, float]


def random_room(size_name: str, rng: np.random.Generator) -> tuple[tuple[float, float, float], float]:
    """A shoebox room of one of :data:`ROOM_SIZES`: its size (m) and wall absorption."""
    (low, high), (z_low, z_high) = ROOM_SIZES[size_name]
    return (float(rng.uniform(low, high)), float(rng.uniform(low, high)), float(rng.uniform(z_low, z_high))), \
        float(rng.uniform(*ABSORPTION))


def _position(size: tuple[float, float, float], rng: np.random.Generator) -> tuple[float, float, float]:
    return tuple(float(rng.uniform(WALL_MARGIN, side - WALL_MARGIN)) for side in size)


def _placement(size, absorption, rng: np.random.Generator) -> _Placement:
    while True:  # a source at least MIN_DISTANCE from the microphone (always possible: rooms are >= 2 m)
        source, mic = _position(size, rng), _position(size, rng)
        if math.dist(source, mic) >= MIN_DISTANCE:
            return _Placement(size, absorption, source, mic)


def direct_peaked_rir(size, absorption, rng: np.random.Generator) -> np.ndarray:
    """A RIR for a random placement whose largest sample is the direct path.

    A far source with source and microphone near the floor or a wall gets a
    reflection almost as early and as strong as the direct sound; where two such
    reflections meet on one sample they can exceed it (about 3% of placements).
    Those placements are drawn again, so that aligning to the peak aligns to the direct path.
    """
    while True:
        place = _placement(size, absorption, rng)
        rir = image_source_rir(place.size, place.source, place.mic, place.absorption, rng)
        if int(np.argmax(np.abs(rir))) == direct_index(place.source, place.mic):
            return rir


def direct_index(source: tuple[float, float, float], mic: tuple[float, float, float], rate: int = RATE) -> int:
    """The sample of the direct path in :func:`image_source_rir`'s output."""
    return round(math.dist(source, mic) / SPEED_OF_SOUND * rate)
