"""Plots and result tables of experiments.

An experiment directory ``exp/<tag>/`` holds ``results/<name>.json`` files (written
and read by :mod:`spk.results`). This module draws DET, ROC, confusion and training
plots into ``exp/<tag>/plots/``, writes ``exp/<tag>/RESULTS.md``, and puts several
experiments side by side in one table.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from spk import metrics  # noqa: E402
from spk.data import DataDirError  # noqa: E402
from spk.data.io import atomic_write_text  # noqa: E402
from spk.model_dir import CONFIG  # noqa: E402
from spk.results import read_confusion_csv, read_results  # noqa: E402
from spk.scoring import TrialsError, labelled_scores  # noqa: E402

logger = logging.getLogger(__name__)

# DET axes: error rates (percent) that get a tick: the NIST set, 0.01 for very good
# systems, 60 and 80 for bad ones. Only those inside the axis range are drawn;
# denser ticks would overlap at the low end of probit axes.
DET_TICKS_PERCENT = (0.01, 0.1, 0.5, 1, 2, 5, 10, 20, 40, 60, 80)

# Up to this many classes a confusion plot names every class and writes counts in cells.
CONFUSION_TICK_LABELS_MAX = 40
CONFUSION_COUNTS_MAX = 20

# Keys of a training-log record that are x coordinates, not curves.
_LOG_X_KEYS = ("epoch", "step", "iteration")

# Columns of the cross-experiment table: (header, results key, number format).
COMPARISON_COLUMNS = (
    ("EER %", "eer", "{:.2f}"),
    ("minDCF@0.01", "min_dcf_0.01", "{:.4f}"),
    ("minDCF@0.001", "min_dcf_0.001", "{:.4f}"),
    ("Cllr", "cllr", "{:.3f}"),  # calibrated scores only
    ("top-1 %", "top1", "{:.2f}"),
    ("top-5 %", "top5", "{:.2f}"),
)


# --------------------------------------------------------------------------- #
# training logs
# --------------------------------------------------------------------------- #

def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file (e.g. ``train_log.jsonl``), skipping blank lines."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------- #
# plots
# --------------------------------------------------------------------------- #

def _save(fig, path: str | os.PathLike, *, crop: bool = True) -> None:
    """Write ``fig`` as a PNG; ``crop`` trims the margins (not needed, and a third of the time, after
    ``tight_layout``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, **({"bbox_inches": "tight"} if crop else {}))
    plt.close(fig)


def line_styles(count: int) -> list[dict[str, str]]:
    """``count`` distinct (colour, line style) pairs: the ten tab10 colours solid, then dashed, ...

    Matplotlib's default cycle repeats its colours after ten lines, which made two
    systems of a large comparison indistinguishable.
    """
    colours = [matplotlib.colors.to_hex(c) for c in plt.get_cmap("tab10").colors]
    dashes = ["-", "--", "-.", ":"]
    return [{"color": colours[i % len(colours)], "linestyle": dashes[(i // len(colours)) % len(dashes)]}
            for i in range(count)]


def _legend(ax, count: int, corner: str) -> None:
    """In ``corner`` for a few systems; below the axes, in two columns, when curves would run under it."""
    if count <= 5:
        ax.legend(loc=corner, fontsize=8)
    else:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=8, frameon=False)


def _det_range(systems: Mapping) -> tuple[float, float]:
    """DET axis range (fractions): down to the smallest nonzero error rate, within [0.01 %, 0.1 %];
    up to 40 %, or 80 % when some system is worse than 25 % EER."""
    smallest, worst_eer = 1.0, 0.0
    for scores, labels in systems.values():
        fpr, fnr, _ = metrics.det_curve(scores, labels)
        rates = np.concatenate([fpr, fnr])
        if np.any(rates > 0):
            smallest = min(smallest, rates[rates > 0].min())
        worst_eer = max(worst_eer, metrics.compute_eer(scores, labels)[0])
    low = min(max(smallest, 1e-4), 1e-3) * 0.9
    high = 0.8 if worst_eer > 0.25 else 0.4
    return low, high


def plot_det(path: str | os.PathLike, systems: Mapping[str, tuple], title: str = "DET curve") -> None:
    """DET curves (miss rate against false-alarm rate on normal-deviate axes), EERs marked.

    ``systems`` maps a legend name to ``(scores, labels)``. The axes are probit
    scaled as in NIST evaluations, so Gaussian score distributions give straight lines.
    """
    if not systems:
        raise ValueError("plot_det needs at least one system")
    low, high = _det_range(systems)
    from scipy.stats import norm  # a second to import: only for DET plots

    probit = norm.ppf
    fig, ax = plt.subplots(figsize=(6, 6))
    for (name, (scores, labels)), style in zip(systems.items(), line_styles(len(systems))):
        fpr, fnr, _ = metrics.det_curve(scores, labels)
        eer, _ = metrics.compute_eer(scores, labels)
        # rates of exactly 0 or 1 are infinitely far out; clip them to just past the frame
        clip = (low / 10, 1 - low / 10)
        line, = ax.plot(probit(np.clip(fpr, *clip)), probit(np.clip(fnr, *clip)),
                        label=f"{name} (EER {100 * eer:.2f}%)", **style)
        ax.plot(probit(np.clip(eer, *clip)), probit(np.clip(eer, *clip)), "o", color=line.get_color())
    ax.plot(probit([low, high]), probit([low, high]), ":", color="grey", linewidth=0.8)
    ticks = [t for t in DET_TICKS_PERCENT if low <= t / 100 <= high]
    labels = [f"{t:g}" for t in ticks]
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_ticks(probit(np.array(ticks) / 100), labels)
    ax.set_xlim(probit(low), probit(high))
    ax.set_ylim(probit(low), probit(high))
    ax.set_xlabel("False acceptance rate (%)")
    ax.set_ylabel("False rejection rate (%)")
    ax.set_title(title)
    ax.grid(True, linewidth=0.5, alpha=0.6)
    ax.set_aspect("equal")
    _legend(ax, len(systems), "lower left")  # a few DET curves stay away from the lower left corner
    _save(fig, path)


def plot_roc(path: str | os.PathLike, systems: Mapping[str, tuple]) -> None:
    """ROC curves (true against false acceptance rate, linear axes) with AUC in the legend."""
    if not systems:
        raise ValueError("plot_roc needs at least one system")
    fig, ax = plt.subplots(figsize=(6, 6))
    for (name, (scores, labels)), style in zip(systems.items(), line_styles(len(systems))):
        fpr, fnr, _ = metrics.det_curve(scores, labels)
        auc = metrics.roc_auc(scores, labels)
        ax.plot(np.append(fpr, 0.0), np.append(1 - fnr, 0.0), label=f"{name} (AUC {auc:.4f})", **style)
    ax.plot([0, 1], [0, 1], ":", color="grey", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("False acceptance rate")
    ax.set_ylabel("True acceptance rate")
    ax.set_title("ROC curve")
    ax.grid(True, linewidth=0.5, alpha=0.6)
    ax.set_aspect("equal")
    _legend(ax, len(systems), "lower right")
    _save(fig, path)


def plot_confusion(path: str | os.PathLike, matrix, labels: Sequence[str] | None = None,
                   title: str = "Confusion matrix") -> None:
    """Heat map of a confusion matrix (row = true class), each row scaled to sum to 1.

    Class names are shown up to CONFUSION_TICK_LABELS_MAX classes and counts up to
    CONFUSION_COUNTS_MAX; beyond that only the colours remain readable.
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    num_classes = matrix.shape[0]
    if matrix.shape != (num_classes, num_classes) or num_classes == 0:
        raise ValueError(f"a confusion matrix must be square and non-empty, not shape {matrix.shape}")
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    accuracy = np.trace(matrix) / max(matrix.sum(), 1)

    size = min(4 + 0.3 * num_classes, 16)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    # a square-root colour scale keeps small confusions visible next to a strong diagonal
    image = ax.imshow(share, cmap="Blues", norm=matplotlib.colors.PowerNorm(0.5, vmin=0, vmax=1),
                      interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    if labels is not None and num_classes <= CONFUSION_TICK_LABELS_MAX:
        ticks = np.arange(num_classes)
        ax.set_xticks(ticks, labels, rotation=90, fontsize=8)
        ax.set_yticks(ticks, labels, fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    if num_classes <= CONFUSION_COUNTS_MAX:
        for (row, col), count in np.ndenumerate(matrix):
            if count:
                ax.text(col, row, f"{count:g}", ha="center", va="center", fontsize=7,
                        color="white" if share[row, col] > 0.5 else "black")
    ax.set_xlabel("Predicted speaker")
    ax.set_ylabel("True speaker")
    ax.set_title(f"{title} ({num_classes} speakers, accuracy {100 * accuracy:.1f}%)")
    _save(fig, path)


def _curve_panel(key: str) -> str:
    """The panel a training-log key is drawn in: keys with the same kind of value share one."""
    if key.endswith("loss"):
        return "loss"
    if key.endswith("acc") or key.endswith("accuracy"):
        return "accuracy"
    if key.endswith("eer"):
        return "EER"
    if key in ("lr", "learning_rate"):
        return "learning rate"
    return key


def plot_training_curves(path: str | os.PathLike, log_records: Sequence[Mapping]) -> None:
    """Training curves from a JSON-lines training log, one panel per kind of value.

    Every numeric key is drawn against ``epoch`` (or the record number): losses share
    a panel, accuracies another, EERs another, the learning rate another (log
    scale), and any other key gets a panel of its own.
    """
    if not log_records:
        raise ValueError("no training-log records to plot")
    x_key = next((k for k in _LOG_X_KEYS if all(k in r for r in log_records)), None)
    x = [r[x_key] for r in log_records] if x_key else list(range(1, len(log_records) + 1))

    panels: dict[str, list[str]] = {}
    for record in log_records:
        for key, value in record.items():
            if key in _LOG_X_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            keys = panels.setdefault(_curve_panel(key), [])
            if key not in keys:
                keys.append(key)
    if not panels:
        raise ValueError("the training-log records hold no numeric values to plot")

    columns = min(len(panels), 3)
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.5 * rows), squeeze=False)
    for ax, (panel, keys) in zip(axes.flat, panels.items()):
        for key in keys:
            points = [(xi, r[key]) for xi, r in zip(x, log_records) if isinstance(r.get(key), (int, float))]
            ax.plot(*zip(*points), marker="o" if len(points) < 30 else None, markersize=3, label=key)
        if panel == "learning rate" and all(r.get(k, 1) > 0 for r in log_records for k in keys
                                             if isinstance(r.get(k), (int, float))):
            ax.set_yscale("log")
        ax.set_title(panel)
        ax.set_xlabel(x_key or "record")
        ax.grid(True, linewidth=0.5, alpha=0.6)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    _save(fig, path, crop=False)


# --------------------------------------------------------------------------- #
# markdown tables
# --------------------------------------------------------------------------- #

def _cell(value, fmt: str = "{}") -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float) and not math.isfinite(value):
        return ""
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub-flavoured markdown table; ``|`` inside cells is escaped."""
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(headers), line(["---"] * len(headers)), *(line(r) for r in rows)]) + "\n"


# --------------------------------------------------------------------------- #
# one experiment
# --------------------------------------------------------------------------- #

def _resolve(path_text: str, exp_dir: Path) -> Path | None:
    """A path recorded in a results file, as given (recipe-relative) or relative to the experiment."""
    for candidate in (Path(path_text), exp_dir / path_text):
        if candidate.is_file():
            return candidate
    return None


def _link(target: Path, exp_dir: Path) -> str:
    """Markdown link target for a file, relative to RESULTS.md inside ``exp_dir``."""
    return Path(os.path.relpath(target.resolve(), exp_dir.resolve())).as_posix()


def _scored_trials(result: dict, exp_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """``(scores, labels)`` of a verification result, read from the score and trials files it records.

    None, with a warning naming the experiment, the test and the file, when the
    result records no score file or the files cannot be read: plots are skipped, never the report.
    """
    where = f"{exp_dir.name}/results/{result['name']}.json"
    if not result.get("scores"):
        logger.warning("%s records no score file; no DET plot", where)
        return None
    scores_path = _resolve(result["scores"], exp_dir)
    if scores_path is None:
        logger.warning("%s: score file %s not found; no DET plot (rerun stage 5 to make it)", where,
                       result["scores"])
        return None
    trials_path = _resolve(result["trials"], exp_dir) if result.get("trials") else None
    try:
        return labelled_scores(scores_path, trials_path)
    except (TrialsError, DataDirError, ValueError, OSError) as error:
        logger.warning("%s: no DET plot: %s", where, error)
        return None


def _verification_plots(result: dict, exp_dir: Path) -> None:
    """DET and ROC plots of one verification result whose score file is recorded."""
    scored = _scored_trials(result, exp_dir)
    if scored is None:
        return
    systems = {result["name"]: scored}
    plot_det(exp_dir / "plots" / f"det_{result['name']}.png", systems)
    plot_roc(exp_dir / "plots" / f"roc_{result['name']}.png", systems)


def _confusion_plot(result: dict, exp_dir: Path) -> None:
    confusion_path = _resolve(result["confusion"], exp_dir) if result.get("confusion") else None
    if confusion_path is None:
        return
    try:
        matrix, class_names = read_confusion_csv(confusion_path)
    except (ValueError, OSError) as error:
        logger.warning("%s: no confusion plot: %s", result["name"], error)
        return
    plot_confusion(exp_dir / "plots" / f"confusion_{result['name']}.png", matrix, class_names,
                   title=result["name"])


def _verification_table(results: list[dict], exp_dir: Path) -> str:
    headers = ["test", "trials", "#target", "#nontarget", "EER %", "minDCF@0.01", "minDCF@0.001",
               "ROC-AUC", "backend"]
    rows = []
    for r in results:
        trials = _resolve(r["trials"], exp_dir) if r.get("trials") else None
        trials_cell = f"[{r['trials']}]({_link(trials, exp_dir)})" if trials else _cell(r.get("trials"))
        rows.append([r["name"], trials_cell, _cell(r.get("num_target")), _cell(r.get("num_nontarget")),
                     _cell(r.get("eer"), "{:.2f}"), _cell(r.get("min_dcf_0.01"), "{:.4f}"),
                     _cell(r.get("min_dcf_0.001"), "{:.4f}"), _cell(r.get("roc_auc"), "{:.4f}"),
                     _cell(r.get("backend"))])
    return markdown_table(headers, rows)


def _identification_table(results: list[dict], exp_dir: Path) -> str:
    headers = ["test", "speakers", "test samples", "top-1 %", "top-5 %", "confusion"]
    rows = []
    for r in results:
        confusion = _resolve(r["confusion"], exp_dir) if r.get("confusion") else None
        confusion_cell = (f"[csv]({_link(confusion, exp_dir)})" if confusion
                          else _cell(r.get("confusion")))
        rows.append([r["name"], _cell(r.get("num_speakers")), _cell(r.get("num_test")),
                     _cell(r.get("top1"), "{:.2f}"), _cell(r.get("top5"), "{:.2f}"), confusion_cell])
    return markdown_table(headers, rows)


def write_experiment_report(exp_dir: str | os.PathLike) -> Path:
    """Write ``exp_dir/RESULTS.md`` (tables, plots, config) and the plots it shows; returns its path.

    Makes ``plots/det_<name>.png`` and ``plots/roc_<name>.png`` for each verification
    result that records its score file, ``plots/confusion_<name>.png`` for each
    identification result with a confusion CSV, and ``plots/training_curves.png``
    from ``train_log.jsonl``; then links every PNG under ``plots/``.
    """
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"experiment directory {exp_dir} does not exist")
    results = read_results(exp_dir)
    verification = [r for r in results if r.get("kind") == "verification"]
    identification = [r for r in results if r.get("kind") == "identification"]
    for r in results:
        if r.get("kind") not in ("verification", "identification"):
            logger.warning("results file %s has unknown kind %r; left out", r["name"], r.get("kind"))

    for result in verification:
        _verification_plots(result, exp_dir)
    for result in identification:
        _confusion_plot(result, exp_dir)
    train_log = exp_dir / "train_log.jsonl"
    if train_log.is_file() and (records := read_jsonl(train_log)):
        plot_training_curves(exp_dir / "plots" / "training_curves.png", records)

    parts = [f"# Results: {exp_dir.name}\n"]
    if not results:
        parts.append(f"No results yet (no `results/*.json` in {exp_dir}).\n")
    if verification:
        parts += ["## Verification\n", _verification_table(verification, exp_dir)]
    if identification:
        parts += ["## Identification\n", _identification_table(identification, exp_dir)]
    plots = sorted((exp_dir / "plots").glob("*.png"))
    if plots:
        parts.append("## Plots\n")
        parts += [f"![{p.stem}](plots/{p.name})\n" for p in plots]
    config = exp_dir / CONFIG
    if config.is_file():
        parts += ["## Config\n", f"`{config.name}`:\n", "```yaml\n" + config.read_text().rstrip("\n") + "\n```\n"]

    out = exp_dir / "RESULTS.md"
    atomic_write_text(out, "\n".join(parts))
    logger.info("wrote %s (%d results, %d plots)", out, len(results), len(plots))
    return out


# --------------------------------------------------------------------------- #
# several experiments
# --------------------------------------------------------------------------- #

def find_experiments(root: str | os.PathLike) -> list[Path]:
    """The directories directly under ``root`` that hold ``results/*.json``, sorted by name."""
    return sorted(d for d in Path(root).iterdir() if d.is_dir() and any((d / "results").glob("*.json")))


def compare_experiments(exp_dirs: Iterable[str | os.PathLike]) -> list[dict]:
    """One row per experiment and test: ``experiment``, ``test`` and the COMPARISON_COLUMNS keys.

    Keys that do not apply (e.g. EER of an identification test) are None.
    """
    rows = []
    for exp_dir in exp_dirs:
        for result in read_results(exp_dir):
            row = {"experiment": Path(exp_dir).name, "test": result["name"]}
            for _, key, _ in COMPARISON_COLUMNS:
                row[key] = result.get(key)
            rows.append(row)
    return rows


def comparison_markdown(rows: list[dict]) -> str:
    """The comparison rows as a markdown table."""
    headers = ["experiment", "test", *(header for header, _, _ in COMPARISON_COLUMNS)]
    cells = [[r["experiment"], r["test"], *(_cell(r[key], fmt) for _, key, fmt in COMPARISON_COLUMNS)]
             for r in rows]
    return markdown_table(headers, cells)


def comparison_csv(rows: list[dict]) -> str:
    """The comparison rows as CSV with full-precision numbers and empty cells where not applicable."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["experiment", "test", *(header for header, _, _ in COMPARISON_COLUMNS)])
    for r in rows:
        writer.writerow([r["experiment"], r["test"],
                         *("" if r[key] is None else r[key] for _, key, _ in COMPARISON_COLUMNS)])
    return out.getvalue()


def _system_names(exp_dirs: Sequence[Path]) -> list[str]:
    """Legend names of experiments: directory names, or whole paths where two names are the same."""
    names = [d.name for d in exp_dirs]
    return [name if names.count(name) == 1 else str(d) for name, d in zip(names, exp_dirs)]


def comparison_det_systems(exp_dirs: Iterable[str | os.PathLike]) -> dict[str, dict[str, tuple]]:
    """Per verification test that two or more experiments have scores for: experiment -> ``(scores, labels)``.

    Every experiment given is a system, the no-training baseline too when it is
    among them. Identification results (no score file) are left out; a
    verification result whose score file is missing or unreadable is skipped with a warning.
    """
    exp_dirs = [Path(d) for d in exp_dirs]
    by_test: dict[str, dict[str, tuple]] = {}
    for exp_dir, name in zip(exp_dirs, _system_names(exp_dirs)):
        for result in read_results(exp_dir):
            if result.get("kind") != "verification":
                continue
            scored = _scored_trials(result, exp_dir)
            if scored is not None:
                by_test.setdefault(result["name"], {})[name] = scored
    return {test: systems for test, systems in sorted(by_test.items()) if len(systems) >= 2}


def plot_comparison_dets(exp_dirs: Iterable[str | os.PathLike], plots_dir: str | os.PathLike) -> dict[str, Path]:
    """Draw ``plots_dir/det_<test>.png`` with every system's DET curve for each test of
    :func:`comparison_det_systems`; returns test -> plot path."""
    plots = {}
    for test, systems in comparison_det_systems(exp_dirs).items():
        path = Path(plots_dir) / f"det_{test}.png"
        plot_det(path, systems, title=f"DET curve: {test}")
        logger.info("wrote %s (%d systems)", path, len(systems))
        plots[test] = path
    return plots


def _plot_links(plots: Mapping[str, Path], markdown_dir: Path) -> str:
    """A markdown section showing each test's comparison DET plot, linked relative to ``markdown_dir``."""
    if not plots:
        return ""
    parts = ["\n## DET curves\n"]
    for test, path in plots.items():
        parts.append(f"\n### {test}\n\n![det_{test}]({_link(path, markdown_dir)})\n")
    return "".join(parts)


def write_comparison(out_md: str | os.PathLike | None, out_csv: str | os.PathLike | None,
                     exp_dirs: Iterable[str | os.PathLike], *,
                     plots_dir: str | os.PathLike | None = None) -> list[dict]:
    """Write the comparison of ``exp_dirs`` as markdown and/or CSV; returns the rows.

    Also draws one DET plot per test with every system's curve
    (:func:`plot_comparison_dets`) into ``plots_dir`` (default: ``plots/``
    beside ``out_md``; with neither, none) and links them below the markdown table.
    """
    exp_dirs = [Path(d) for d in exp_dirs]
    rows = compare_experiments(exp_dirs)
    if plots_dir is None and out_md is not None:
        plots_dir = Path(out_md).parent / "plots"
    plots = plot_comparison_dets(exp_dirs, plots_dir) if plots_dir is not None else {}
    if out_md is not None:
        atomic_write_text(out_md, "# Results: all experiments\n\n" + comparison_markdown(rows)
                          + _plot_links(plots, Path(out_md).parent))
    if out_csv is not None:
        atomic_write_text(out_csv, comparison_csv(rows))
    return rows
