"""``spk data ...``: exit codes and messages, through click's runner and one real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from spk.cli import main

VALID = {
    "wav.scp": "a-1 /c/a-1.wav\na-2 /c/a-2.wav\nb-1 /c/b-1.wav\nb-2 /c/b-2.wav\n",
    "utt2spk": "a-1 a\na-2 a\nb-1 b\nb-2 b\n",
    "spk2utt": "a a-1 a-2\nb b-1 b-2\n",
}


def data_dir(path: Path, **changes: str) -> Path:
    """VALID with files replaced (``utt2spk="..."``) or removed (``spk2utt=None``), written to ``path``."""
    files = {**VALID, **{name.replace("_scp", ".scp"): text for name, text in changes.items()}}
    path.mkdir(parents=True)
    for name, text in files.items():
        if text is not None:
            (path / name).write_text(text)
    return path


def run(*args: str):
    return CliRunner().invoke(main, ["data", *map(str, args)])


def test_validate_valid_dir(tmp_path):
    d = data_dir(tmp_path / "d")
    result = run("validate", d)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{d}: 4 utterances, 2 speakers, 4 recordings (wav.scp, utt2spk, spk2utt)\n"


def test_validate_broken_dir_lists_problems_on_stderr(tmp_path):
    d = data_dir(tmp_path / "d", utt2spk="a-1 a\na-2 a\nb-2 b\nb-1 b\n")
    result = run("validate", d)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert f"data dir '{d}' has 1 problem:\n  utt2spk:4: not sorted: 'b-1' comes after 'b-2'" in result.stderr
    assert "Traceback" not in result.output


def test_validate_need_feats(tmp_path):
    result = run("validate", data_dir(tmp_path / "d"), "--need-feats")
    assert result.exit_code == 1
    assert "feats.scp: missing. Fix: compute features" in result.stderr


def test_validate_missing_dir_is_a_usage_error(tmp_path):
    result = run("validate", tmp_path / "nowhere")
    assert result.exit_code == 2
    assert "does not exist" in result.stderr


def test_fix_then_valid(tmp_path):
    d = data_dir(tmp_path / "d", wav_scp=VALID["wav.scp"] + "c-1 /c/c-1.wav\n", spk2utt=None)
    result = run("fix", d)
    assert result.exit_code == 0, result.output
    assert "kept 4 utterances, 2 speakers, 4 recordings; rewrote wav.scp, spk2utt" in result.stdout
    assert "wav.scp: dropped 1 line(s): line 5: utterance 'c-1' has no speaker in utt2spk" in result.stderr
    assert (d / "spk2utt").read_text() == VALID["spk2utt"]
    assert run("validate", d).exit_code == 0


def test_fix_reports_what_needs_a_person(tmp_path):
    d = data_dir(tmp_path / "d", wav_scp="u1 x\n", utt2spk="u1 alice\n", spk2utt="alice u1\n")
    result = run("fix", d)
    assert result.exit_code == 1
    assert "what is left needs a person" in result.stderr
    assert "speaker-id 'alice' is not a prefix of utterance-id 'u1'" in result.stderr


def test_fix_unfixable_dir(tmp_path):
    d = data_dir(tmp_path / "d", wav_scp=None)
    result = run("fix", d)
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: data dir")
    assert "wav.scp: missing; there is nothing to fix without it" in result.stderr


def test_subset_with_lists_and_first(tmp_path):
    src = data_dir(tmp_path / "src")
    (tmp_path / "utts").write_text("a-2\nb-1\nb-2\nzz-1\n")
    (tmp_path / "spks").write_text("b\n")
    result = run("subset", src, tmp_path / "dst", "--utt-list", tmp_path / "utts", "--spk-list", tmp_path / "spks",
                 "--first", "1")
    assert result.exit_code == 0, result.output
    assert result.stdout.endswith("1 utterances, 1 speakers, 1 recordings (wav.scp, utt2spk, spk2utt)\n")
    assert (tmp_path / "dst" / "utt2spk").read_text() == "b-1 b\n"
    assert "1 utterances are not in" in result.stderr  # zz-1


def test_subset_needs_a_choice(tmp_path):
    result = run("subset", data_dir(tmp_path / "src"), tmp_path / "dst")
    assert result.exit_code == 2
    assert "choose what to keep: --utt-list, --spk-list and/or --first" in result.stderr


def test_subset_empty_is_an_error(tmp_path):
    (tmp_path / "spks").write_text("nobody\n")
    result = run("subset", data_dir(tmp_path / "src"), tmp_path / "dst", "--spk-list", tmp_path / "spks")
    assert result.exit_code == 1
    assert "Error: the subset of" in result.stderr and "is empty" in result.stderr


def test_split(tmp_path):
    d = data_dir(tmp_path / "d")
    result = run("split", d, "2", "--per-spk")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(d / "split2" / "1"), str(d / "split2" / "2")]
    assert (d / "split2" / "2" / "utt2spk").read_text() == "b-1 b\nb-2 b\n"


def test_split_too_many_parts(tmp_path):
    result = run("split", data_dir(tmp_path / "d"), "3", "--per-spk")
    assert result.exit_code == 1
    assert "Error: cannot split" in result.stderr and "into 3 parts by speaker: it has only 2 speakers" in result.stderr
    assert run("split", tmp_path / "d", "0").exit_code == 2


def test_console_script_validate(tmp_path):
    d = data_dir(tmp_path / "d", utt2spk="a-1 a\na-2 b\nb-1 b\nb-2 b\n")
    spk = Path(sys.executable).with_name("spk")  # the console script installed in this environment
    result = subprocess.run([spk, "data", "validate", str(d)], capture_output=True, text=True)
    assert result.returncode == 1
    assert "utt2spk:2: speaker-id 'b' is not a prefix of utterance-id 'a-2'" in result.stderr
    assert "Traceback" not in result.stderr
