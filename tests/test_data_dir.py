"""The data-dir package: reading, writing, validation, fix, subset and split, on real files."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from spk.data import (
    DataDir,
    DataDirError,
    DataDirUsageError,
    DataFormatError,
    Segment,
    Trial,
    fix_data_dir,
    read_id_list,
    read_kv,
    read_scp,
    read_segments,
    read_spk2utt,
    read_trials,
    read_utt2dur,
    read_utt2spk,
    read_wav_scp,
    spk2utt_to_utt2spk,
    split_data_dir,
    subset_data_dir,
    utt2spk_to_spk2utt,
    validate_data_dir,
    validate_trials,
    write_kv,
    write_segments,
    write_spk2utt,
    write_trials,
    write_utt2dur,
    write_utt2spk,
    write_wav_scp,
)
from spk.data.io import write_lines

SPEAKERS = {"a": 2, "b": 3, "c": 1}  # speaker -> number of utterances


def write_files(directory: Path, files: dict[str, str]) -> Path:
    """Write ``{name: text}`` into ``directory`` (created) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def valid_files() -> dict[str, str]:
    """A small valid data dir without segments: speakers a (2 utts), b (3), c (1)."""
    utts = [(f"{spk}-{i}", spk) for spk, count in SPEAKERS.items() for i in range(1, count + 1)]
    return {
        "wav.scp": "".join(f"{utt} /corpus/{utt}.wav\n" for utt, _ in utts),
        "utt2spk": "".join(f"{utt} {spk}\n" for utt, spk in utts),
        "spk2utt": "a a-1 a-2\nb b-1 b-2 b-3\nc c-1\n",
        "utt2dur": "".join(f"{utt} 2.5\n" for utt, _ in utts),
        "feats.scp": "".join(f"{utt} fbank/feats.ark:{10 * i}\n" for i, (utt, _) in enumerate(utts)),
    }


def segmented_files() -> dict[str, str]:
    """A valid data dir with segments: two recordings cut into four utterances."""
    return {
        "wav.scp": "rec1 /corpus/rec1.flac\nrec2 ffmpeg -i /corpus/rec2.m4a -f wav - |\n",
        "reco2dur": "rec1 10.0\nrec2 5.0\n",
        "segments": "a-1 rec1 0.0 4.0\na-2 rec1 4.0 10.0\nb-1 rec2 0 2.5\nb-2 rec2 2.5 -1\n",
        "utt2spk": "a-1 a\na-2 a\nb-1 b\nb-2 b\n",
        "spk2utt": "a a-1 a-2\nb b-1 b-2\n",
    }


def problems_of(path: Path, **needs) -> list[str]:
    with pytest.raises(DataDirError) as caught:
        validate_data_dir(path, **needs)
    return [str(problem) for problem in caught.value.problems]


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


# ---------------------------------------------------------------- reading and writing


def test_wav_scp_value_is_everything_after_the_key_verbatim(tmp_path):
    path = tmp_path / "wav.scp"
    path.write_text("r1 /data/r1.wav\nr2\tsox  /data/r2.flac -t wav -r 16000 - |\n")
    assert read_wav_scp(path) == {"r1": "/data/r1.wav", "r2": "sox  /data/r2.flac -t wav -r 16000 - |"}


def test_readers_return_typed_values(tmp_path):
    files = write_files(tmp_path, {**segmented_files(), "trials": "a b-1 target\nb a-1 nontarget\n",
                                   "utt2dur": "a-1 4\na-2 6.0\n"})
    segments = read_segments(files / "segments")
    assert segments["a-2"] == Segment("rec1", 4.0, 10.0)
    assert segments["b-2"].end == -1
    recording, start, end = segments["a-1"]  # unpacks as the (rec, start, end) AudioReader takes
    assert (recording, start, end) == ("rec1", 0.0, 4.0)
    assert read_spk2utt(files / "spk2utt") == {"a": ["a-1", "a-2"], "b": ["b-1", "b-2"]}
    assert read_utt2dur(files / "utt2dur") == {"a-1": 4.0, "a-2": 6.0}
    assert read_trials(files / "trials") == [Trial("a", "b-1", True), Trial("b", "a-1", False)]
    assert read_trials(files / "trials")[1].label == "nontarget"


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_text("a-1 a\na-2 a extra\n")
    with pytest.raises(DataFormatError, match=r"utt2spk:2: expected 2 fields, found 3; the layout is "
                                              r"`<utt-id> <spk-id>`\. Fix: "):
        read_utt2spk(path)


def test_non_numeric_segment_time_names_file_and_line(tmp_path):
    path = tmp_path / "segments"
    path.write_text("a-1 rec1 0.0 4.0\na-2 rec1 four 5.0\n")
    with pytest.raises(DataFormatError, match=r"segments:2: start time 'four' is not a number"):
        read_segments(path)


def test_bad_trials_label_names_file_and_line(tmp_path):
    path = tmp_path / "trials"
    path.write_text("a b-1 target\nb a-1 impostor\n")
    with pytest.raises(DataFormatError, match=r"trials:2: label 'impostor' is neither 'target' nor 'nontarget'"):
        read_trials(path)


def test_strict_reader_rejects_duplicate_key_naming_both_lines(tmp_path):
    path = tmp_path / "feats.scp"
    path.write_text("a-1 x.ark:1\na-2 x.ark:2\na-1 x.ark:3\n")
    with pytest.raises(DataFormatError, match=r"feats.scp:3: duplicate key 'a-1' \(first on line 1\)"):
        read_scp(path)


def test_writers_sort_like_lc_all_c_sort(tmp_path):
    keys = ["b-1", "B-2", "a-10", "a-1", "a-1-x", "é-1", "Z", "a_1", "a.1"]
    write_utt2dur(tmp_path / "utt2dur", {key: 1.25 for key in keys})
    written = (tmp_path / "utt2dur").read_bytes()
    by_sort = subprocess.run(["sort", "-k1,1"], input=written, capture_output=True, check=True,
                             env={**os.environ, "LC_ALL": "C"}).stdout
    assert written == by_sort
    assert read_lines(tmp_path / "utt2dur")[0] == "B-2 1.25"


def test_writers_round_trip(tmp_path):
    segments = {"a-2": Segment("r", 1.5, 3.0), "a-1": ("r", 0.0, 1.5), "b-1": Segment("s", 0.25, -1)}
    write_segments(tmp_path / "segments", segments)
    assert read_lines(tmp_path / "segments") == ["a-1 r 0 1.5", "a-2 r 1.5 3", "b-1 s 0.25 -1"]
    assert read_segments(tmp_path / "segments") == {key: Segment(*value) for key, value in segments.items()}
    write_spk2utt(tmp_path / "spk2utt", {"b": ["b-2", "b-1"], "a": ["a-1"]})
    assert read_lines(tmp_path / "spk2utt") == ["a a-1", "b b-1 b-2"]
    write_trials(tmp_path / "trials", [("b", "a-1", False), Trial("a", "b-1", True)])
    assert read_lines(tmp_path / "trials") == ["a b-1 target", "b a-1 nontarget"]
    write_wav_scp(tmp_path / "wav.scp", {"r": "sox r.flac -t wav - |"})
    assert read_wav_scp(tmp_path / "wav.scp") == {"r": "sox r.flac -t wav - |"}


def test_generic_key_value_files(tmp_path):
    write_kv(tmp_path / "utt2num_frames", {"b-1": 12, "a-1": "300"})
    assert read_lines(tmp_path / "utt2num_frames") == ["a-1 300", "b-1 12"]
    assert read_kv(tmp_path / "utt2num_frames") == {"a-1": "300", "b-1": "12"}


def test_writer_refuses_keys_it_could_not_read_back(tmp_path):
    with pytest.raises(ValueError, match="contains whitespace"):
        write_utt2spk(tmp_path / "utt2spk", {"a 1": "a"})
    with pytest.raises(ValueError, match="would not read back"):
        write_utt2spk(tmp_path / "utt2spk", {"a-1": "a b"})
    assert not (tmp_path / "utt2spk").exists()


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "utt2spk"
    path.write_text("a-1 a\n")

    def lines_then_failure():
        yield "a-1 a"
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_lines(path, lines_then_failure())
    assert path.read_text() == "a-1 a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["utt2spk"]


def test_utt2spk_spk2utt_conversions():
    utt2spk = {"b-1": "b", "a-2": "a", "a-1": "a"}
    spk2utt = utt2spk_to_spk2utt(utt2spk)
    assert spk2utt == {"a": ["a-1", "a-2"], "b": ["b-1"]}
    assert list(spk2utt_to_utt2spk(spk2utt)) == ["a-1", "a-2", "b-1"]
    with pytest.raises(ValueError, match="'a-1' is listed under speakers 'a' and 'b'"):
        spk2utt_to_utt2spk({"a": ["a-1"], "b": ["a-1"]})


def test_read_id_list_takes_first_fields(tmp_path):
    path = tmp_path / "list"
    path.write_text("a-1\n\n  b-1 b\n")
    assert read_id_list(path) == ["a-1", "b-1"]


def test_data_dir_object(tmp_path):
    data = DataDir(write_files(tmp_path / "d", {k: v for k, v in valid_files().items() if k != "spk2utt"}))
    assert data.has("wav.scp") and not data.has("segments")
    assert data.segments() is None
    assert data.utt_ids() == ["a-1", "a-2", "b-1", "b-2", "b-3", "c-1"]
    assert data.speaker_ids() == ["a", "b", "c"]
    assert data.spk2utt()["b"] == ["b-1", "b-2", "b-3"]  # derived from utt2spk
    assert data.feats_scp()["a-2"] == "fbank/feats.ark:10"
    with pytest.raises(DataDirError, match=r"cmvn.scp: missing\. Fix: create it"):
        data.cmvn_scp()
    assert data.validate(need_feats=True).num_utterances == 6


# ---------------------------------------------------------------- validation


def test_valid_dir_summary(tmp_path):
    summary = validate_data_dir(write_files(tmp_path / "d", valid_files()), need_feats=True, need_durations=True)
    assert (summary.num_utterances, summary.num_speakers, summary.num_recordings) == (6, 3, 6)
    assert summary.warnings == ()
    assert "6 utterances, 3 speakers, 6 recordings" in str(summary)


def test_valid_segmented_dir(tmp_path):
    summary = validate_data_dir(write_files(tmp_path / "d", segmented_files()))
    assert (summary.num_utterances, summary.num_speakers, summary.num_recordings) == (4, 2, 2)


def test_missing_spk2utt_is_a_warning(tmp_path):
    files = valid_files()
    del files["spk2utt"]
    summary = validate_data_dir(write_files(tmp_path / "d", files))
    assert [str(warning) for warning in summary.warnings] == [
        f"spk2utt: missing (derivable from utt2spk). Fix: run `spk data fix {tmp_path / 'd'}` to write it"]


def test_unsorted_file(tmp_path):
    files = valid_files()
    files["utt2spk"] = "a-1 a\na-3 a\na-2 a\n"
    files["wav.scp"] = "a-1 x\na-2 y\na-3 z\n"
    files["spk2utt"] = "a a-1 a-2 a-3\n"
    del files["utt2dur"], files["feats.scp"]
    d = write_files(tmp_path / "d", files)
    assert problems_of(d) == [f"utt2spk:3: not sorted: 'a-2' comes after 'a-3'. Fix: sort with "
                              f"`LC_ALL=C sort -k1,1 -u` or run `spk data fix {d}`"]


def test_unsorted_by_byte_order_not_by_locale(tmp_path):
    files = {"wav.scp": "a-1 x\nB-1 y\n", "utt2spk": "a-1 a\nB-1 B\n"}  # C order puts 'B' before 'a'
    assert problems_of(write_files(tmp_path / "d", files))[0].startswith(
        "wav.scp:2: not sorted: 'B-1' comes after 'a-1'")


def test_utterance_missing_its_speaker(tmp_path):
    files = valid_files()
    files["wav.scp"] += "d-1 /corpus/d-1.wav\n"
    problems = problems_of(write_files(tmp_path / "d", files))
    assert len(problems) == 1
    assert problems[0].startswith("wav.scp:7: utterance 'd-1' has no speaker: it is not in utt2spk")


def test_utterance_missing_its_recording(tmp_path):
    files = valid_files()
    files["wav.scp"] = files["wav.scp"].replace("b-2 /corpus/b-2.wav\n", "")
    problems = problems_of(write_files(tmp_path / "d", files))
    assert problems == [f"utt2spk:4: utterance 'b-2' has no recording: it is not in wav.scp (and there is no "
                        f"segments file). Fix: add its recording to wav.scp, or delete the utterance "
                        f"(`spk data fix {tmp_path / 'd'}` drops it)"]


def test_duplicate_key_names_both_lines(tmp_path):
    files = valid_files()
    files["utt2dur"] = files["utt2dur"].replace("a-2 2.5\n", "a-2 2.5\na-2 3.0\n")
    problems = problems_of(write_files(tmp_path / "d", files))
    assert len(problems) == 1
    assert problems[0].startswith("utt2dur:3: duplicate key 'a-2' (also on line 2). Fix: keep one of the two lines")


@pytest.mark.parametrize(("segment", "message"), [
    ("a-2 rec1 6.0 6.0", "segments:2: end 6 s is not after start 6 s"),
    ("a-2 rec1 6.0 5.5", "segments:2: end 5.5 s is not after start 6 s"),
    ("a-2 rec1 -1 5.0", "segments:2: start -1 s is negative"),
    ("a-2 rec1 4.0 10.5", "segments:2: end 10.5 s is past the end of recording 'rec1' (10 s in reco2dur)"),
    ("a-2 rec9 4.0 8.0", "segments:2: recording 'rec9' of utterance 'a-2' is not in wav.scp"),
])
def test_bad_segment(tmp_path, segment, message):
    files = segmented_files()
    files["segments"] = files["segments"].replace("a-2 rec1 4.0 10.0", segment)
    problems = problems_of(write_files(tmp_path / "d", files))
    assert len(problems) == 1
    assert problems[0].startswith(message + ". Fix: ")


def test_segment_end_within_tolerance_or_minus_one_is_fine(tmp_path):
    files = segmented_files()
    files["segments"] = files["segments"].replace("a-2 rec1 4.0 10.0", "a-2 rec1 4.0 10.005")
    validate_data_dir(write_files(tmp_path / "d", files))  # b-2 ends at -1: to the end


def test_unused_recording_is_a_warning(tmp_path):
    files = segmented_files()
    files["wav.scp"] += "rec3 /corpus/rec3.flac\n"
    summary = validate_data_dir(write_files(tmp_path / "d", files))
    assert str(summary.warnings[0]).startswith("wav.scp: 1 recordings are used by no segment: 'rec3'")


def test_speaker_id_not_a_prefix(tmp_path):
    files = {"wav.scp": "u1 x\nu2 y\n", "utt2spk": "u1 alice\nu2 bob\n", "spk2utt": "alice u1\nbob u2\n"}
    problems = problems_of(write_files(tmp_path / "d", files))
    assert problems[0] == ("utt2spk:1: speaker-id 'alice' is not a prefix of utterance-id 'u1'. Fix: rename the "
                           "utterance to start with its speaker id (e.g. 'alice-u1') in every file, so that "
                           "sorting by utterance also groups speakers")
    assert len(problems) == 2


def test_inconsistent_spk2utt(tmp_path):
    files = valid_files()
    files["spk2utt"] = "a a-1 a-2 b-3\nb b-1 b-2\nc c-1 c-9\n"
    d = write_files(tmp_path / "d", files)
    fix = f"Fix: regenerate spk2utt from utt2spk: run `spk data fix {d}`"
    assert problems_of(d) == [
        f"spk2utt:1: lists utterance 'b-3' under speaker 'a', but utt2spk gives it to 'b'. {fix}",
        f"spk2utt:3: utterance 'c-9' of speaker 'c' is not in utt2spk. {fix}",
    ]


def test_utterance_missing_from_spk2utt(tmp_path):
    files = valid_files()
    files["spk2utt"] = "a a-1 a-2\nb b-1 b-3\nc c-1\n"
    assert problems_of(write_files(tmp_path / "d", files))[0].startswith(
        "utt2spk:4: utterance 'b-2' of speaker 'b' is missing from spk2utt")


def test_malformed_lines_are_all_reported(tmp_path):
    files = valid_files()
    files["utt2spk"] = files["utt2spk"].replace("b-1 b\n", "b-1 b b\n").replace("c-1 c\n", "\nc-1 c\n")
    files["utt2dur"] = files["utt2dur"].replace("a-1 2.5", "a-1 long")
    d = write_files(tmp_path / "d", files)
    fix = f"Fix: correct or delete the line (`spk data fix {d}` drops it and keeps a backup)"
    assert problems_of(d)[:3] == [
        f"utt2spk:3: expected 2 fields, found 3; the layout is `<utt-id> <spk-id>`. {fix}",
        f"utt2spk:6: empty line. {fix}",
        f"utt2dur:1: duration 'long' is not a number; the layout is `<utt-id> <seconds>`. {fix}",
    ]


def test_bad_trials_label_in_data_dir(tmp_path):
    files = {**valid_files(), "trials": "a b-1 target\nb a-1 maybe\n"}
    assert problems_of(write_files(tmp_path / "d", files)) == [
        "trials:2: label 'maybe' is neither 'target' nor 'nontarget'; the layout is "
        "`<enroll-id> <test-id> target|nontarget`. Fix: correct or delete the line"]


def test_all_problems_collected_in_one_error(tmp_path):
    files = valid_files()
    files["utt2spk"] = files["utt2spk"].replace("a-2 a\n", "a-2 a\na-2 a\n")
    files["feats.scp"] += "z-1 fbank/feats.ark:999\n"
    files["utt2dur"] = files["utt2dur"].replace("c-1 2.5", "c-1 -2.5")
    d = write_files(tmp_path / "d", files)
    with pytest.raises(DataDirError) as caught:
        validate_data_dir(d)
    assert [(p.file, p.line) for p in caught.value.problems] == [("utt2spk", 3), ("feats.scp", 7), ("utt2dur", 6)]
    message = str(caught.value)
    assert message.startswith(f"data dir '{d}' has 3 problems:\n  utt2spk:3: duplicate key 'a-2'")
    assert "feats.scp:7: utterance 'z-1' is not in utt2spk" in message
    assert "utt2dur:6: duration -2.5 is negative" in message


def test_need_feats(tmp_path):
    files = valid_files()
    files["feats.scp"] = "".join(line + "\n" for line in files["feats.scp"].splitlines()[:4])
    d = write_files(tmp_path / "d", files)
    summary = validate_data_dir(d)  # partial features are only a warning ...
    assert str(summary.warnings[0]).startswith("feats.scp: 2 of 6 utterances have no entry: 'b-3', 'c-1'")
    assert problems_of(d, need_feats=True)[0].startswith(  # ... unless the caller needs them
        "feats.scp: 2 of 6 utterances have no entry: 'b-3', 'c-1'. Fix: compute features")
    (d / "feats.scp").unlink()
    assert problems_of(d, need_feats=True) == [
        "feats.scp: missing. Fix: compute features and CMVN statistics for every utterance (stage 1)"]


def test_kaldi_per_speaker_cmvn_is_accepted(tmp_path):
    files = {**valid_files(), "cmvn.scp": "a cmvn.ark:1\nb cmvn.ark:2\nc cmvn.ark:3\n"}
    validate_data_dir(write_files(tmp_path / "d", files), need_cmvn=True)


def test_missing_required_files(tmp_path):
    d = write_files(tmp_path / "d", {"spk2utt": "a a-1\n"})
    problems = problems_of(d)
    assert problems[0].startswith("wav.scp: missing. Fix: write `<rec-id> <path>`")
    assert problems[1] == (f"utt2spk: missing. Fix: write `<utt-id> <spk-id>` for every utterance, or run "
                           f"`spk data fix {d}` to derive it from spk2utt")


def test_validate_trials_against_enroll_and_test_sets(tmp_path):
    path = tmp_path / "trials"
    path.write_text("a b-1 target\na b-2 target\nb a-1 nontarget\nx a-2 nontarget\nb zz target\n")
    trials = validate_trials(path)
    assert len(trials) == 5
    with pytest.raises(DataDirError) as caught:
        validate_trials(path, enroll_ids={"a", "b"}, test_ids={"a-1", "a-2", "b-1", "b-2"})
    assert [str(problem) for problem in caught.value.problems] == [
        f"{path}:4: enroll id 'x' is not in the enroll set. Fix: use a speaker or utterance id of the enroll "
        "data dir, or delete the line",
        f"{path}:5: test id 'zz' is not in the test set. Fix: use an utterance id of the test data dir, or delete "
        "the line",
    ]


def test_trials_pair_with_two_labels(tmp_path):
    path = tmp_path / "trials"
    path.write_text("a b-1 target\na b-1 nontarget\n")
    with pytest.raises(DataDirError, match=r"trials:2: pair 'a' 'b-1' is labelled differently on line 1"):
        validate_trials(path)


# ---------------------------------------------------------------- fix


def broken_files() -> dict[str, str]:
    """valid_files() with one of each fixable problem."""
    files = valid_files()
    files["utt2spk"] = ("b-1 b\na-1 a\na-2 a\na-2 a\nb-2 b\nb-3 b extra\nc-1 c\nd-1 d\n")  # unsorted, dup, bad
    files["wav.scp"] = files["wav.scp"].replace("c-1 /corpus/c-1.wav\n", "") + "e-1 /corpus/e-1.wav\n"
    files["feats.scp"] = files["feats.scp"].replace("a-2 fbank/feats.ark:10\n", "")
    files["spk2utt"] = "a a-1\nb b-1 b-2 b-3\n"
    return files


def test_fix_keeps_the_consistent_part_and_backs_up_the_rest(tmp_path):
    files = broken_files()
    d = write_files(tmp_path / "d", files)
    summary = fix_data_dir(d)

    assert validate_data_dir(d).num_utterances == 3
    assert read_utt2spk(d / "utt2spk") == {"a-1": "a", "b-1": "b", "b-2": "b"}
    assert read_lines(d / "spk2utt") == ["a a-1", "b b-1 b-2"]
    assert list(read_wav_scp(d / "wav.scp")) == ["a-1", "b-1", "b-2"]
    assert list(read_scp(d / "feats.scp")) == ["a-1", "b-1", "b-2"]
    assert (summary.num_utterances, summary.num_speakers, summary.num_recordings) == (3, 2, 3)

    backup = summary.backup_dir
    assert backup.parent == d / ".backup"
    for name in ("utt2spk", "wav.scp", "feats.scp", "spk2utt", "utt2dur"):
        assert (backup / name).read_text() == files[name], name  # originals, unchanged
    assert read_lines(backup / "utt2spk.dropped") == ["a-2 a", "a-2 a", "b-3 b extra", "c-1 c", "d-1 d"]
    assert read_lines(backup / "wav.scp.dropped") == ["a-2 /corpus/a-2.wav", "b-3 /corpus/b-3.wav",
                                                     "e-1 /corpus/e-1.wav"]
    log = (backup / "fix.log").read_text()
    assert "utt2spk:4: repeats key 'a-2' of line 3" in log
    assert "utt2spk:6: expected 2 fields, found 3" in log
    assert "utt2spk:7: utterance 'c-1' has no recording in wav.scp" in log
    assert "utt2spk:3: utterance 'a-2' is missing from feats.scp" in log
    assert "wav.scp:6: utterance 'e-1' has no speaker in utt2spk" in log
    assert summary.dropped["utt2spk"] == 5


def test_fix_twice_changes_nothing_the_second_time(tmp_path):
    d = write_files(tmp_path / "d", broken_files())
    fix_data_dir(d)
    before = {path.name: path.read_bytes() for path in d.iterdir() if path.is_file()}
    second = fix_data_dir(d)
    assert second.changed == () and second.backup_dir is None
    assert {path.name: path.read_bytes() for path in d.iterdir() if path.is_file()} == before
    assert len(list((d / ".backup").iterdir())) == 1


def test_fix_segmented_dir_drops_bad_segments_and_unused_recordings(tmp_path):
    files = segmented_files()
    files["segments"] = files["segments"].replace("a-2 rec1 4.0 10.0", "a-2 rec1 4.0 12.0")
    files["segments"] = files["segments"].replace("b-1 rec2 0 2.5", "b-1 rec2 2.5 2.5")
    files["segments"] = files["segments"].replace("b-2 rec2 2.5 -1", "b-2 rec3 2.5 -1")
    files["wav.scp"] += "rec4 /corpus/rec4.flac\n"
    d = write_files(tmp_path / "d", files)
    summary = fix_data_dir(d)
    validate_data_dir(d)
    assert list(read_segments(d / "segments")) == ["a-1"]
    assert list(read_wav_scp(d / "wav.scp")) == ["rec1"]
    assert read_lines(d / "reco2dur") == ["rec1 10.0"]
    assert read_lines(d / "spk2utt") == ["a a-1"]
    log = (summary.backup_dir / "fix.log").read_text()
    assert "segments:2: end 12 is past the end of recording 'rec1' (10 s)" in log
    assert "segments:3: end 2.5 is not after start 2.5" in log
    assert "segments:4: recording 'rec3' of utterance 'b-2' is not in wav.scp" in log
    assert "wav.scp:3: recording 'rec4' is used by no utterance left" in log


def test_fix_derives_utt2spk_from_spk2utt(tmp_path):
    files = valid_files()
    del files["utt2spk"]
    d = write_files(tmp_path / "d", files)
    fix_data_dir(d)
    assert read_utt2spk(d / "utt2spk")["b-3"] == "b"
    validate_data_dir(d)


def test_fix_refuses_when_nothing_consistent_remains(tmp_path):
    files = {"wav.scp": "r1 x\n", "utt2spk": "a-1 a\n"}
    d = write_files(tmp_path / "d", files)
    with pytest.raises(DataDirError, match="no utterance is consistent across the files; nothing was changed"):
        fix_data_dir(d)
    assert sorted(path.name for path in d.iterdir()) == ["utt2spk", "wav.scp"]


def test_fix_leaves_speaker_prefix_problems_to_a_person(tmp_path):
    d = write_files(tmp_path / "d", {"wav.scp": "u1 x\n", "utt2spk": "u1 alice\n"})
    fix_data_dir(d)
    assert "speaker-id 'alice' is not a prefix" in problems_of(d)[0]


# ---------------------------------------------------------------- subset


def test_subset_by_utterances_filters_every_file(tmp_path):
    files = {**segmented_files(), "utt2dur": "a-1 4\na-2 6\nb-1 2.5\nb-2 2.5\n",
             "trials": "a b-1 target\nb a-1 nontarget\na a-2 target\n"}
    src = write_files(tmp_path / "src", files)
    summary = subset_data_dir(src, tmp_path / "dst", utts=["a-2", "b-1", "nobody"])
    dst = tmp_path / "dst"
    assert (summary.num_utterances, summary.num_speakers, summary.num_recordings) == (2, 2, 2)
    assert read_lines(dst / "segments") == ["a-2 rec1 4.0 10.0", "b-1 rec2 0 2.5"]
    assert read_lines(dst / "utt2dur") == ["a-2 6", "b-1 2.5"]
    assert read_lines(dst / "spk2utt") == ["a a-2", "b b-1"]
    assert read_lines(dst / "reco2dur") == read_lines(src / "reco2dur")
    assert read_lines(dst / "trials") == ["a b-1 target", "a a-2 target"]  # 'b a-1' lost its test side


def test_subset_by_speakers_and_first(tmp_path):
    src = write_files(tmp_path / "src", valid_files())
    subset_data_dir(src, tmp_path / "bs", speakers=["b", "c"])
    assert DataDir(tmp_path / "bs").utt_ids() == ["b-1", "b-2", "b-3", "c-1"]
    assert read_lines(tmp_path / "bs" / "wav.scp")[0] == "b-1 /corpus/b-1.wav"
    subset_data_dir(src, tmp_path / "first", first=3)
    assert DataDir(tmp_path / "first").utt_ids() == ["a-1", "a-2", "b-1"]
    subset_data_dir(src, tmp_path / "both", speakers=["b"], first=2)
    assert DataDir(tmp_path / "both").utt_ids() == ["b-1", "b-2"]


def test_subset_removes_stale_files_in_destination(tmp_path):
    files = valid_files()
    src = write_files(tmp_path / "src", {k: v for k, v in files.items() if k != "feats.scp"})
    dst = write_files(tmp_path / "dst", {"feats.scp": "old-1 old.ark:1\n"})
    subset_data_dir(src, dst, first=2)
    assert not (dst / "feats.scp").exists()


def test_subset_errors(tmp_path):
    src = write_files(tmp_path / "src", valid_files())
    with pytest.raises(DataDirUsageError, match="is empty"):
        subset_data_dir(src, tmp_path / "dst", speakers=["nobody"])
    with pytest.raises(DataDirUsageError, match="choose what to keep"):
        subset_data_dir(src, tmp_path / "dst")
    with pytest.raises(DataDirUsageError, match="another directory"):
        subset_data_dir(src, src, first=1)
    (src / "utt2spk").write_text("b-1 b\na-1 a\n")
    with pytest.raises(DataDirError):  # the source must be valid
        subset_data_dir(src, tmp_path / "dst", first=1)


# ---------------------------------------------------------------- split


def many_speakers_files(counts: dict[str, int]) -> dict[str, str]:
    utts = [(f"{spk}-{i:02d}", spk) for spk, count in counts.items() for i in range(count)]
    utts.sort()
    return {
        "wav.scp": "".join(f"{utt} /c/{utt}.wav\n" for utt, _ in utts),
        "utt2spk": "".join(f"{utt} {spk}\n" for utt, spk in utts),
        "feats.scp": "".join(f"{utt} f.ark:{i}\n" for i, (utt, _) in enumerate(utts)),
    }


def test_split_by_utterance_is_balanced_and_complete(tmp_path):
    src = write_files(tmp_path / "src", many_speakers_files({"s1": 7, "s2": 4, "s3": 6}))
    parts = split_data_dir(src, 4)
    assert parts == [src / "split4" / str(k) for k in range(1, 5)]
    utts = [DataDir(part).utt_ids() for part in parts]
    assert sorted(len(u) for u in utts) == [4, 4, 4, 5]
    assert sum(utts, []) == DataDir(src).utt_ids()  # contiguous runs, in order
    for part in parts:
        validate_data_dir(part, need_feats=True)


def test_split_by_speaker_keeps_speakers_whole(tmp_path):
    src = write_files(tmp_path / "src", many_speakers_files({"s1": 5, "s2": 1, "s3": 1, "s4": 1, "s5": 1, "s6": 1}))
    parts = split_data_dir(src, 2, by_speaker=True)
    speakers = [set(DataDir(part).speaker_ids()) for part in parts]
    assert speakers == [{"s1"}, {"s2", "s3", "s4", "s5", "s6"}]  # 5 and 5 utterances
    assert sorted(sum((DataDir(part).utt_ids() for part in parts), [])) == DataDir(src).utt_ids()
    for part in parts:
        validate_data_dir(part)


def test_split_too_many_parts(tmp_path):
    src = write_files(tmp_path / "src", valid_files())
    with pytest.raises(DataDirUsageError, match=r"cannot split .* into 7 parts: it has only 6 utterances"):
        split_data_dir(src, 7)
    with pytest.raises(DataDirUsageError, match=r"into 4 parts by speaker: it has only 3 speakers"):
        split_data_dir(src, 4, by_speaker=True)


def test_split_is_reused_while_up_to_date(tmp_path):
    src = write_files(tmp_path / "src", valid_files())
    parts = split_data_dir(src, 2)
    (parts[0] / "utt2spk").write_text("marker\n")  # a reuse keeps even this
    split_data_dir(src, 2)
    assert (parts[0] / "utt2spk").read_text() == "marker\n"

    split_data_dir(src, 2, by_speaker=True)  # another mode: rewritten
    assert DataDir(parts[0]).utt_ids() == ["a-1", "a-2"]  # speaker a (2 utterances) | b and c (3 + 1)

    write_files(src, {name: text for name, text in valid_files().items() if name != "feats.scp"})
    (src / "feats.scp").unlink()  # the source changed: rewritten, without feats.scp
    split_data_dir(src, 2, by_speaker=True)
    assert not (parts[0] / "feats.scp").exists()


def test_split_segmented_dir_shares_recordings_between_parts(tmp_path):
    src = write_files(tmp_path / "src", segmented_files())
    parts = split_data_dir(src, 3)
    assert [DataDir(part).utt_ids() for part in parts] == [["a-1"], ["a-2", "b-1"], ["b-2"]]
    assert [list(DataDir(part).wav_scp()) for part in parts] == [["rec1"], ["rec1", "rec2"], ["rec2"]]
    for part in parts:
        validate_data_dir(part)


def test_split_and_subset_filter_kaldi_per_speaker_cmvn(tmp_path):
    src = write_files(tmp_path / "src", {**valid_files(), "cmvn.scp": "a c.ark:1\nb c.ark:2\nc c.ark:3\n"})
    subset_data_dir(src, tmp_path / "dst", utts=["b-2", "c-1"])
    assert read_lines(tmp_path / "dst" / "cmvn.scp") == ["b c.ark:2", "c c.ark:3"]
    parts = split_data_dir(src, 2)  # a-1 a-2 b-1 | b-2 b-3 c-1: speaker b in both
    assert [list(read_scp(part / "cmvn.scp")) for part in parts] == [["a", "b"], ["b", "c"]]


def test_windows_line_endings_and_tabs_are_read(tmp_path):
    d = write_files(tmp_path / "d", {"wav.scp": "a-1\t/c/a 1.wav\r\nb-1  /c/b1.wav\r\n",
                                     "utt2spk": "a-1 a\r\nb-1\tb\r\n"})
    assert read_wav_scp(d / "wav.scp") == {"a-1": "/c/a 1.wav", "b-1": "/c/b1.wav"}
    assert validate_data_dir(d).num_utterances == 2
    fix_data_dir(d)  # rewrites with plain newlines and one space after the key
    assert (d / "wav.scp").read_bytes() == b"a-1 /c/a 1.wav\nb-1 /c/b1.wav\n"


def test_invalid_utf8_line_is_reported(tmp_path):
    d = write_files(tmp_path / "d", {"wav.scp": "a-1 x\n", "utt2spk": "a-1 a\n"})
    (d / "utt2spk").write_bytes(b"a-1 a\n\xff-2 a\n")
    assert problems_of(d)[0].startswith("utt2spk:2: not valid UTF-8. Fix: correct or delete the line")
