"""Tests for spk.audio: real files written with soundfile, real shell pipes, no mocks."""

import io
import shlex
import struct
import sys

import numpy as np
import pytest
import soundfile as sf

from spk.audio import AudioError, AudioReader, is_pipe, read_audio, read_audio_with_rate, read_segment

RATE = 16000
PYTHON = shlex.quote(sys.executable)


def sine(freq=440.0, seconds=1.0, rate=RATE, amplitude=0.5):
    t = np.arange(int(seconds * rate)) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def int16_signal(seconds=1.0, rate=RATE, seed=0):
    """A speech-like int16 signal: a sine plus noise, so every sample differs."""
    noise = np.random.default_rng(seed).normal(0, 0.05, int(seconds * rate))
    return np.round((sine(seconds=seconds, rate=rate) + noise) * 32767).astype(np.int16)


def write(path, data, rate=RATE, **kwargs):
    sf.write(str(path), data, rate, **kwargs)
    return str(path)


def peak_frequency(samples, rate):
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)]


def assert_names(error, *names):
    message = str(error.value)
    for name in names:
        assert name in message, f"{name!r} not in {message!r}"


# --- formats -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "suffix, fmt", [("wav", "WAV"), ("flac", "FLAC"), ("sph", "NIST")], ids=["wav", "flac", "nist-sphere"]
)
def test_lossless_formats_read_back_exactly(tmp_path, suffix, fmt):
    pcm = int16_signal()
    path = write(tmp_path / f"a.{suffix}", pcm, format=fmt, subtype="PCM_16")
    samples = read_audio(path)
    assert samples.dtype == np.float32
    np.testing.assert_array_equal(samples, pcm / np.float32(32768))


def test_native_rate_is_kept_when_target_rate_is_none(tmp_path):
    path = write(tmp_path / "a.wav", int16_signal(rate=8000), rate=8000)
    samples, rate = read_audio_with_rate(path, target_rate=None)
    assert rate == 8000 and len(samples) == 8000


def test_mp3_reads_back_approximately(tmp_path):
    signal = sine(seconds=2.0)
    path = write(tmp_path / "a.mp3", signal, format="MP3")
    samples = read_audio(path)
    assert abs(len(samples) - len(signal)) <= 0.01 * RATE
    n = min(len(samples), len(signal))
    assert np.corrcoef(samples[:n], signal[:n])[0, 1] > 0.95
    assert np.sum(samples[:n] ** 2) / np.sum(signal[:n] ** 2) == pytest.approx(1.0, abs=0.1)


def test_8k_is_resampled_to_16k_keeping_the_frequency(tmp_path):
    path = write(tmp_path / "a8k.wav", sine(freq=1000.0, seconds=1.5, rate=8000), rate=8000)
    samples, rate = read_audio_with_rate(path, target_rate=16000)
    assert rate == 16000
    assert abs(len(samples) - 24000) <= 1
    assert peak_frequency(samples, 16000) == pytest.approx(1000.0, abs=2.0)


def test_output_is_clipped_to_full_scale(tmp_path):
    path = write(tmp_path / "loud.wav", np.full(1000, 1.5), subtype="FLOAT")
    samples = read_audio(path)
    assert samples.max() == 1.0


# --- channels ------------------------------------------------------------------------


@pytest.fixture
def stereo(tmp_path):
    left, right = int16_signal(seed=1), int16_signal(seed=2)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1))
    return path, left / np.float32(32768), right / np.float32(32768)


def test_stereo_default_is_the_channel_mean(stereo):
    path, left, right = stereo
    np.testing.assert_allclose(read_audio(path), (left + right) / 2, atol=1e-7)


def test_stereo_channel_pick(stereo):
    path, left, right = stereo
    np.testing.assert_array_equal(read_audio(path, channel=0), left)
    np.testing.assert_array_equal(read_audio(path, channel=1), right)


def test_channel_out_of_range_is_an_error(stereo):
    path = stereo[0]
    with pytest.raises(AudioError, match="channel 2 requested but the audio has 2") as error:
        read_audio(path, channel=2, utt_id="spk1-utt1")
    assert_names(error, "spk1-utt1", path)


# --- pipes ---------------------------------------------------------------------------


WAV_WRITER = """
import io, struct, sys
import numpy as np, soundfile as sf
rate, seconds = int(sys.argv[1]), float(sys.argv[2])
t = np.arange(int(rate * seconds)) / rate
buffer = io.BytesIO()
sf.write(buffer, 0.5 * np.sin(2 * np.pi * 440 * t), rate, format="WAV", subtype="PCM_16")
wav = bytearray(buffer.getvalue())
# Sizes unknown, as ffmpeg writes them to a pipe.
wav[4:8] = wav[40:44] = struct.pack("<I", 0xFFFFFFFF)
sys.stdout.buffer.write(wav)
"""


@pytest.fixture
def wav_writer(tmp_path):
    script = tmp_path / "write_wav.py"
    script.write_text(WAV_WRITER)
    return f"{PYTHON} {shlex.quote(str(script))}"


def test_is_pipe():
    assert is_pipe("sox a.wav -t wav - |") and is_pipe("cat a.wav | ")
    assert not is_pipe("/data/a.wav")


def test_cat_pipe_equals_the_file(tmp_path):
    path = write(tmp_path / "a.flac", int16_signal(), format="FLAC")
    np.testing.assert_array_equal(read_audio(f"cat {shlex.quote(path)} |"), read_audio(path))


def test_command_writing_wav_to_stdout(wav_writer):
    samples, rate = read_audio_with_rate(f"{wav_writer} 8000 2.0 |", target_rate=None)
    assert rate == 8000 and len(samples) == 16000
    assert peak_frequency(samples, rate) == pytest.approx(440.0, abs=1.0)
    assert len(read_audio(f"{wav_writer} 8000 2.0 |")) == 32000


# --- segments ------------------------------------------------------------------------


@pytest.fixture
def long_wav(tmp_path):
    pcm = int16_signal(seconds=3.0)
    return write(tmp_path / "long.wav", pcm), pcm / np.float32(32768)


def test_segment_of_a_file_equals_slicing(long_wav):
    path, full = long_wav
    np.testing.assert_array_equal(read_segment(path, 0.5, 1.25), full[8000:20000])


def test_segment_of_a_pipe_equals_slicing(long_wav):
    path, full = long_wav
    np.testing.assert_array_equal(read_segment(f"cat {path} |", 0.5, 1.25), full[8000:20000])


def test_segment_of_an_mp3_equals_slicing_the_decoded_file(tmp_path):
    path = write(tmp_path / "a.mp3", sine(seconds=2.0), format="MP3")
    full = read_audio(path)
    np.testing.assert_array_equal(read_segment(path, 0.25, 0.75), full[4000:12000])


@pytest.mark.parametrize("end", [-1, None])
def test_segment_end_minus_one_or_none_reads_to_the_end(long_wav, end):
    path, full = long_wav
    np.testing.assert_array_equal(read_segment(path, 2.0, end), full[32000:])


def test_segment_end_slightly_past_the_recording_is_clipped(long_wav):
    path, full = long_wav
    np.testing.assert_array_equal(read_segment(path, 2.5, 3.009), full[40000:])


def test_segment_end_far_past_the_recording_is_an_error(long_wav):
    path, _ = long_wav
    with pytest.raises(AudioError, match="ends at 3.02 s but the recording is only 3.000 s") as error:
        read_segment(path, 2.5, 3.02, utt_id="u7")
    assert_names(error, "u7", path)


def test_segment_end_before_start_is_an_error(long_wav):
    path, _ = long_wav
    with pytest.raises(AudioError, match="not after its start") as error:
        read_segment(path, 1.0, 0.5, utt_id="u8")
    assert_names(error, "u8", path)


def test_segment_resampled(tmp_path):
    path = write(tmp_path / "a8k.wav", sine(freq=1000.0, seconds=2.0, rate=8000), rate=8000)
    assert abs(len(read_segment(path, 0.5, 1.5, target_rate=16000)) - 16000) <= 1


# --- AudioReader ---------------------------------------------------------------------


@pytest.fixture
def recordings(tmp_path):
    """Two recordings: a file and a pipe that logs each run to count.txt."""
    first, second = int16_signal(seconds=2.0, seed=3), int16_signal(seconds=2.0, seed=4)
    first_path = write(tmp_path / "rec1.wav", first)
    second_path = write(tmp_path / "rec2.flac", second, format="FLAC")
    count = tmp_path / "count.txt"
    wav_scp = {"rec1": first_path, "rec2": f"echo run >> {count}; cat {second_path} |"}
    return wav_scp, first / np.float32(32768), second / np.float32(32768), count


def test_reader_without_segments(recordings):
    wav_scp, first, second, _ = recordings
    reader = AudioReader(wav_scp)
    assert reader.utt_ids == ["rec1", "rec2"] and len(reader) == 2
    np.testing.assert_array_equal(reader.read("rec1"), first)
    np.testing.assert_array_equal(reader.read("rec2"), second)
    assert reader.duration("rec2") == pytest.approx(2.0)


def test_reader_with_segments(recordings):
    wav_scp, first, second, count = recordings
    segments = {
        "rec2-b": ("rec2", 1.0, -1),
        "rec2-a": ("rec2", 0.0, 1.0),
        "rec1-a": ("rec1", 0.25, 0.5),
    }
    reader = AudioReader(wav_scp, segments)
    assert reader.utt_ids == ["rec1-a", "rec2-a", "rec2-b"] and len(reader) == 3
    np.testing.assert_array_equal(reader.read("rec1-a"), first[4000:8000])
    np.testing.assert_array_equal(reader.read("rec2-a"), second[:16000])
    np.testing.assert_array_equal(reader.read("rec2-b"), second[16000:])
    assert reader.duration("rec1-a") == pytest.approx(0.25)
    # Consecutive segments of the piped recording decoded it once.
    assert count.read_text().splitlines() == ["run"]


def test_reader_resamples_and_picks_channels(tmp_path):
    path = write(tmp_path / "st8k.wav", np.stack([sine(rate=8000), np.zeros(8000)], axis=1), rate=8000)
    reader = AudioReader({"r": path}, {"u": ("r", 0.0, 0.5)}, target_rate=16000, channel=1)
    samples = reader.read("u")
    assert abs(len(samples) - 8000) <= 1 and not samples.any()


def test_reader_unknown_utterance_is_an_error(recordings):
    wav_scp = recordings[0]
    with pytest.raises(AudioError, match="'nope' is not in wav.scp"):
        AudioReader(wav_scp).read("nope")
    with pytest.raises(AudioError, match="'nope' is not in segments"):
        AudioReader(wav_scp, {"u": ("rec1", 0.0, 1.0)}).read("nope")


def test_reader_segment_of_an_unknown_recording_is_an_error(recordings):
    reader = AudioReader(recordings[0], {"u": ("rec9", 0.0, 1.0)})
    with pytest.raises(AudioError, match="'u': its recording 'rec9' .* is not in wav.scp"):
        reader.read("u")


def test_reader_errors_name_the_utterance(tmp_path):
    reader = AudioReader({"r": str(tmp_path / "gone.wav")}, {"spk-u1": ("r", 0.0, 1.0)})
    with pytest.raises(AudioError, match="file not found") as error:
        reader.read("spk-u1")
    assert_names(error, "spk-u1", "gone.wav")


# --- errors --------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = str(tmp_path / "missing.wav")
    with pytest.raises(AudioError, match="file not found. Check the path in wav.scp") as error:
        read_audio(path, utt_id="u1")
    assert_names(error, "u1", path)


def test_corrupt_file_quotes_soundfile(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(b"this is not audio at all " * 20)
    with pytest.raises(AudioError, match="soundfile cannot read it: .*Format not recognised") as error:
        read_audio(str(path), utt_id="u2")
    assert_names(error, "u2", str(path))


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match=r"the file is empty \(0 bytes\)") as error:
        read_audio(str(path), utt_id="u3")
    assert_names(error, "u3", str(path))


def test_zero_length_audio(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros(0, dtype=np.int16))
    with pytest.raises(AudioError, match="the audio has 0 samples") as error:
        read_audio(path, utt_id="u4")
    assert_names(error, "u4", path)


def test_zero_length_segment(long_wav):
    path, _ = long_wav
    # 1.00001 s rounds to the same sample as 1.0 s.
    with pytest.raises(AudioError, match="the audio has 0 samples") as error:
        read_segment(path, 1.0, 1.00001, utt_id="u5")
    assert_names(error, "u5", path)


def test_failing_pipe_quotes_its_stderr():
    source = "echo 'sox FAIL: cannot open input' >&2; exit 3 |"
    with pytest.raises(AudioError, match="failed with exit status 3") as error:
        read_audio(source, utt_id="u6")
    assert_names(error, "u6", source, "sox FAIL: cannot open input")


def test_pipe_with_no_output():
    source = "echo 'nothing to say' >&2 |"
    with pytest.raises(AudioError, match="wrote nothing to stdout") as error:
        read_audio(source, utt_id="u7")
    assert_names(error, "u7", source, "nothing to say")


def test_pipe_with_garbage_output():
    source = "echo not audio |"
    with pytest.raises(AudioError, match="soundfile cannot read it") as error:
        read_audio(source, utt_id="u8")
    assert_names(error, "u8", source)


def shorten_sphere(path):
    """A SPHERE file whose header says shorten-compressed, as LDC corpora ship them."""
    buffer = io.BytesIO()
    sf.write(buffer, int16_signal(), RATE, format="NIST", subtype="PCM_16")
    header = buffer.getvalue()[:1024].decode("ascii")
    header = header.replace("sample_coding -s3 pcm", "sample_coding -s26 pcm,embedded-shorten-v2.00")
    path.write_bytes(header.encode("ascii") + struct.pack("<1000h", *range(1000)))
    return str(path)


def test_compressed_sphere_suggests_sph2pipe(tmp_path):
    path = shorten_sphere(tmp_path / "sw02001.sph")
    with pytest.raises(AudioError, match="compressed NIST SPHERE .*shorten") as error:
        read_audio(path, utt_id="sw02001-A")
    assert_names(error, "sw02001-A", path, "sph2pipe -f wav FILE |")


def test_compressed_sphere_through_a_pipe(tmp_path):
    source = f"cat {shorten_sphere(tmp_path / 'sw02001.sph')} |"
    with pytest.raises(AudioError, match="compressed NIST SPHERE .*sph2pipe -f wav") as error:
        read_audio(source, utt_id="sw02001-A")
    assert_names(error, "sw02001-A", source)


def test_bad_options_are_errors(long_wav):
    path, _ = long_wav
    with pytest.raises(AudioError, match="channel must be 'mean' or a channel index"):
        read_audio(path, channel="left")
    with pytest.raises(AudioError, match="target_rate must be a positive integer"):
        read_audio(path, target_rate=0)
