"""Tests for spk.report and the ``spk report`` / ``spk compare`` commands: real files, no mocks."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from spk import report
from spk.metrics import confusion_matrix, verification_metrics
from spk.results import (ScoringSettings, read_confusion_csv, read_results, read_results_file, results_for_scores,
                         verification_results, write_confusion_csv, write_results)
from spk.scoring import write_scores

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(path):
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def make_experiment(exp_dir, seed=0, separation=2.0):
    """An experiment dir with one scored trial list and one identification test, as stage 5 leaves it."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(400) < 0.25).astype(int)
    scores = rng.normal(size=400) + separation * labels
    enroll = [f"e{i}" for i in range(400)]
    test = [f"t{i}" for i in range(400)]
    trials = exp_dir / "data" / "trials"
    trials.parent.mkdir(parents=True)
    trials.write_text("".join(f"{e} {t} {'target' if l else 'nontarget'}\n"
                              for e, t, l in zip(enroll, test, labels)))
    write_scores(exp_dir / "scores" / "test_cosine", enroll, test, scores)
    write_results(exp_dir / "results" / "test_cosine.json", {
        "kind": "verification", "trials": str(trials), "backend": "cosine",
        "scores": str(exp_dir / "scores" / "test_cosine"), **verification_metrics(scores, labels)})

    speakers = [f"spk{i}" for i in range(6)]
    true_index = rng.integers(0, 6, 120)
    pred_index = np.where(rng.random(120) < 0.8, true_index, rng.integers(0, 6, 120))
    write_confusion_csv(exp_dir / "scores" / "ident_confusion.csv",
                               confusion_matrix(true_index, pred_index, 6), speakers)
    write_results(exp_dir / "results" / "ident.json", {
        "kind": "identification", "num_speakers": 6, "num_test": 120,
        "top1": 100 * float(np.mean(true_index == pred_index)), "top5": 99.5,
        "confusion": str(exp_dir / "scores" / "ident_confusion.csv")})
    return scores, labels


def test_results_json_round_trip(tmp_path):
    path = tmp_path / "exp" / "results" / "a.json"
    write_results(path, {"kind": "verification", "eer": np.float64(2.5), "num_target": np.int64(3),
                         "bad": float("nan")})
    text = path.read_text()
    assert text == json.dumps({"bad": None, "eer": 2.5, "kind": "verification", "num_target": 3},
                              sort_keys=True, indent=2) + "\n"
    assert read_results(tmp_path / "exp") == [
        {"bad": None, "eer": 2.5, "kind": "verification", "num_target": 3, "name": "a"}]


def test_results_record_the_scoring_settings_and_are_found_from_the_scores(tmp_path, monkeypatch):
    """The stage-5 layout exp/scores/<name> + exp/results/<name>.json: the results file is found from the
    score file, and files written before the 'scoring' record give the settings from their flat keys."""
    monkeypatch.chdir(tmp_path)
    write_scores("exp/scores/test_cosine_asnorm", ["a"], ["b"], [0.5])
    settings = ScoringSettings(backend="cosine", center_scp="c.scp", score_norm="asnorm", cohort_scp="k.scp", top_n=9)
    record = verification_results(trials="t", scores="exp/scores/test_cosine_asnorm", enroll_scp="e.scp",
                                  test_scp="e.scp", settings=settings, metrics={"eer": 1.0}, num_cohort=5,
                                  top_n_used=5)
    assert (record["top_n"], record["num_cohort"], record["scoring"]["top_n"]) == (5, 5, 9)
    write_results("exp/results/test_cosine_asnorm.json", record)
    found = results_for_scores("exp/scores/test_cosine_asnorm")
    assert found == Path("exp/results/test_cosine_asnorm.json")
    assert ScoringSettings.from_results(read_results_file(found), found) == settings
    old = {k: v for k, v in record.items() if k != "scoring"}
    assert ScoringSettings.from_results(old, "old.json") == ScoringSettings(
        backend="cosine", center_scp="c.scp", score_norm="asnorm", cohort_scp="k.scp", top_n=5)
    assert results_for_scores("exp/results/test_cosine_asnorm.json") is None  # records other scores
    with pytest.raises(ValueError, match="'kind' must be one of verification, identification, not 'other'"):
        write_results("exp/results/x.json", {"kind": "other"})


def test_confusion_csv_round_trip(tmp_path):
    matrix = np.array([[3, 1], [0, 4]])
    write_confusion_csv(tmp_path / "c.csv", matrix, ["alice", "bob"])
    got, names = read_confusion_csv(tmp_path / "c.csv")
    np.testing.assert_array_equal(got, matrix)
    assert names == ["alice", "bob"]


def test_plots_are_written(tmp_path):
    rng = np.random.default_rng(0)
    labels = (rng.random(300) < 0.3).astype(int)
    systems = {"good": (rng.normal(size=300) + 3 * labels, labels),
               "bad": (rng.normal(size=300) + 0.5 * labels, labels)}
    report.plot_det(tmp_path / "det.png", systems)
    report.plot_roc(tmp_path / "roc.png", systems)
    report.plot_confusion(tmp_path / "confusion_small.png", np.eye(5) * 4 + 1, [f"s{i}" for i in range(5)])
    report.plot_confusion(tmp_path / "confusion_large.png", rng.integers(0, 5, (100, 100)),
                          [f"s{i}" for i in range(100)])
    report.plot_training_curves(tmp_path / "curves.png", [
        {"epoch": e, "train_loss": 3 / e, "valid_loss": 3.2 / e, "train_acc": 1 - 1 / (e + 1), "lr": 0.1 / e,
         "valid_eer": 20 / e} for e in range(1, 6)])
    for name in ("det", "roc", "confusion_small", "confusion_large", "curves"):
        assert is_png(tmp_path / f"{name}.png"), name


def test_line_styles_are_distinct_beyond_ten_systems():
    styles = report.line_styles(25)
    assert len({(s["color"], s["linestyle"]) for s in styles}) == 25
    assert styles[0]["linestyle"] == "-" and styles[10]["linestyle"] == "--"
    assert styles[0]["color"] == styles[10]["color"]  # the colours repeat, the dashes tell them apart


def test_det_plot_of_many_systems_gives_each_its_own_line(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    labels = (rng.random(200) < 0.5).astype(int)
    systems = {f"system{i}": (rng.normal(size=200) + (1 + i / 4) * labels, labels) for i in range(12)}
    captured = {}
    original = report._save

    def keep(fig, path):
        ax = fig.axes[0]
        captured["lines"] = [(line.get_color(), line.get_linestyle()) for line in ax.get_lines()
                             if line.get_label().startswith("system")]
        captured["legend_below"] = ax.get_legend().get_bbox_to_anchor().y0 < ax.get_window_extent().y0
        original(fig, path)

    monkeypatch.setattr(report, "_save", keep)  # look at the figure just before it is written
    report.plot_det(tmp_path / "det.png", systems)
    assert len(captured["lines"]) == 12 and len(set(captured["lines"])) == 12
    assert captured["legend_below"]
    assert is_png(tmp_path / "det.png")


def test_experiment_report(tmp_path):
    exp_dir = tmp_path / "exp" / "lstm_aam"
    make_experiment(exp_dir)
    (exp_dir / "config.yaml").write_text("encoder: lstm\nloss: aam\n")
    (exp_dir / "train_log.jsonl").write_text('{"epoch": 1, "train_loss": 2.0}\n{"epoch": 2, "train_loss": 1.5}\n')
    out = report.write_experiment_report(exp_dir)

    text = out.read_text()
    results = {r["name"]: r for r in read_results(exp_dir)}
    verification = results["test_cosine"]
    assert f"{verification['eer']:.2f}" in text
    assert f"{verification['min_dcf_0.01']:.4f}" in text and f"{verification['roc_auc']:.4f}" in text
    assert f"| {verification['num_target']} | {verification['num_nontarget']} |" in text
    assert f"{results['ident']['top1']:.2f}" in text
    assert "[csv](scores/ident_confusion.csv)" in text
    assert "encoder: lstm" in text
    for plot in ("det_test_cosine", "roc_test_cosine", "confusion_ident", "training_curves"):
        assert is_png(exp_dir / "plots" / f"{plot}.png"), plot
        assert f"(plots/{plot}.png)" in text


def test_missing_score_file_only_skips_the_plot(tmp_path):
    exp_dir = tmp_path / "exp"
    write_results(exp_dir / "results" / "t.json", {
        "kind": "verification", "eer": 5.0, "scores": str(tmp_path / "gone"), "trials": "nowhere"})
    text = report.write_experiment_report(exp_dir).read_text()
    assert "5.00" in text and not (exp_dir / "plots").exists()


def test_comparison_of_two_experiments(tmp_path):
    make_experiment(tmp_path / "exp" / "gru", seed=1, separation=1.0)
    make_experiment(tmp_path / "exp" / "lstm", seed=2, separation=3.0)
    (tmp_path / "exp" / "empty").mkdir()
    experiments = report.find_experiments(tmp_path / "exp")
    assert [e.name for e in experiments] == ["gru", "lstm"]

    rows = report.write_comparison(tmp_path / "exp" / "RESULTS.md", tmp_path / "exp" / "RESULTS.csv", experiments)
    assert [(r["experiment"], r["test"]) for r in rows] == [
        ("gru", "ident"), ("gru", "test_cosine"), ("lstm", "ident"), ("lstm", "test_cosine")]
    eers = {r["experiment"]: r["eer"] for r in rows if r["test"] == "test_cosine"}
    assert eers["lstm"] < eers["gru"]
    assert rows[0]["eer"] is None and rows[1]["top1"] is None  # not applicable: blank

    markdown = (tmp_path / "exp" / "RESULTS.md").read_text()
    assert f"| gru | test_cosine | {eers['gru']:.2f} |" in markdown
    with open(tmp_path / "exp" / "RESULTS.csv") as f:
        table = list(csv.DictReader(f))
    assert [row["experiment"] for row in table] == ["gru", "gru", "lstm", "lstm"]
    assert float(table[3]["EER %"]) == pytest.approx(eers["lstm"]) and table[3]["top-1 %"] == ""


def test_report_and_compare_commands(tmp_path):
    from spk.cli import main

    for name, seed in (("gru", 1), ("lstm", 2)):
        make_experiment(tmp_path / "exp" / name, seed=seed)
    runner = CliRunner()
    result = runner.invoke(main, ["report", str(tmp_path / "exp" / "lstm"), "--compare-root", str(tmp_path / "exp")])
    assert result.exit_code == 0, result.output
    assert is_png(tmp_path / "exp" / "lstm" / "plots" / "det_test_cosine.png")
    assert "| lstm | test_cosine |" in (tmp_path / "exp" / "RESULTS.md").read_text()
    assert (tmp_path / "exp" / "RESULTS.csv").is_file()

    result = runner.invoke(main, ["compare", str(tmp_path / "exp" / "gru"), str(tmp_path / "exp" / "lstm"),
                                  "--csv-out", str(tmp_path / "cmp.csv")])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("| experiment | test | EER % |")  # logs go to stderr
    assert "| gru | ident |" in result.output and (tmp_path / "cmp.csv").is_file()


# --------------------------------------------------------------------------- several systems on one DET plot

SYSTEMS = (("baseline_mfcc_mean", 3, 0.5), ("gru", 1, 1.0), ("lstm", 2, 3.0))


def test_stage6_comparison_draws_every_system_on_one_det_plot(tmp_path):
    from spk.cli import main

    exp = tmp_path / "exp"
    made = {name: make_experiment(exp / name, seed=seed, separation=separation) for name, seed, separation in SYSTEMS}
    result = CliRunner().invoke(main, ["report", str(exp / "lstm"), "--compare-root", str(exp)])
    assert result.exit_code == 0, result.output

    assert is_png(exp / "plots" / "det_test_cosine.png")
    assert not (exp / "plots" / "det_ident.png").exists()  # identification has no score file
    text = (exp / "RESULTS.md").read_text()
    link = "![det_test_cosine](plots/det_test_cosine.png)"
    assert link in text and text.index(link) > text.index("| lstm | test_cosine |")  # below the table
    assert "det_ident" not in text

    systems = report.comparison_det_systems(report.find_experiments(exp))
    assert list(systems) == ["test_cosine"]
    assert sorted(systems["test_cosine"]) == ["baseline_mfcc_mean", "gru", "lstm"]  # the baseline too
    for name, (scores, labels) in systems["test_cosine"].items():
        made_scores, made_labels = made[name]
        np.testing.assert_allclose(np.sort(scores), np.sort(made_scores), rtol=1e-6)
        assert labels.sum() == made_labels.sum() and len(labels) == len(made_labels)


def test_compare_command_with_a_missing_score_file_only_warns(tmp_path):
    from spk.cli import main

    exp = tmp_path / "exp"
    for name, seed, separation in SYSTEMS:
        make_experiment(exp / name, seed=seed, separation=separation)
    (exp / "gru" / "scores" / "test_cosine").unlink()
    result = CliRunner().invoke(main, ["compare", *(str(exp / name) for name, _, _ in SYSTEMS),
                                       "--markdown-out", str(tmp_path / "out" / "cmp.md")])
    assert result.exit_code == 0, result.output
    assert "gru/results/test_cosine.json: score file" in result.stderr and "not found" in result.stderr
    assert "| gru | test_cosine |" in result.stdout  # the table keeps the experiment
    assert is_png(tmp_path / "out" / "plots" / "det_test_cosine.png")  # beside --markdown-out
    assert "![det_test_cosine](plots/det_test_cosine.png)" in (tmp_path / "out" / "cmp.md").read_text()
    systems = report.comparison_det_systems([exp / name for name, _, _ in SYSTEMS])
    assert sorted(systems["test_cosine"]) == ["baseline_mfcc_mean", "lstm"]


def test_compare_command_puts_plots_beside_the_experiments(tmp_path):
    from spk.cli import main

    exp = tmp_path / "exp"
    for name, seed, separation in SYSTEMS[1:]:
        make_experiment(exp / name, seed=seed, separation=separation)
    result = CliRunner().invoke(main, ["compare", str(exp / "gru"), str(exp / "lstm")])
    assert result.exit_code == 0, result.output
    assert is_png(exp / "plots" / "det_test_cosine.png")


def test_no_comparison_plot_for_a_test_only_one_system_scored(tmp_path):
    exp = tmp_path / "exp"
    for name, seed, separation in SYSTEMS[1:]:
        make_experiment(exp / name, seed=seed, separation=separation)
    (exp / "gru" / "scores" / "test_cosine").unlink()
    report.write_comparison(exp / "RESULTS.md", None, report.find_experiments(exp))
    assert not (exp / "plots").exists()
    assert "DET" not in (exp / "RESULTS.md").read_text()
