"""The suite report's statistics on fixed numbers, and report.md / report.csv from a fake folder:
with failed runs, with none finished, on a full disk; its figures' colours, styles and markers."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from support.disk_faults import fail_writes
from ssseg.cli import main
from ssseg.errors import UserError
from ssseg.suite.folder import MANIFEST, mark
from ssseg.suite.report import CSV_COLUMNS, markdown, write_report
from ssseg.suite.results import load_results, paired_difference, summarize, t975

# student mIoU per seed at iterations (1, 2); the teacher of "mt" is 0.1 above its student
REF = {0: (0.65, 0.50), 1: (0.55, 0.60), 2: (0.60, 0.70)}
MT = {0: (0.40, 0.55), 1: (0.50, 0.70), 2: (0.60, 0.72)}


def test_t_quantiles():
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(30) == 2.042
    assert t975(31) == pytest.approx(2.0395, abs=1e-3) and t975(1000) == pytest.approx(1.9623, abs=1e-3)


def test_mean_std_and_paired_difference_by_hand():
    s = summarize([0.5, 0.6, 0.7])
    assert (s.n, s.mean, s.std) == (3, pytest.approx(0.6), pytest.approx(0.1))
    assert summarize([0.4]).std is None and summarize([]).mean is None
    d = paired_difference({0: 0.55, 1: 0.70, 2: 0.72, 3: 0.9}, {0: 0.50, 1: 0.60, 2: 0.70})
    # differences 0.05, 0.10, 0.02 (seed 3 has no partner): mean 0.17/3, sd sqrt(0.0032667/2)
    half = 4.303 * math.sqrt(0.0032666667 / 2) / math.sqrt(3)
    assert d.n == 3 and d.mean == pytest.approx(0.17 / 3)
    assert (d.low, d.high) == (pytest.approx(0.17 / 3 - half), pytest.approx(0.17 / 3 + half))
    assert paired_difference({0: 0.3}, {0: 0.1}).low is None
    assert paired_difference({0: 0.3}, {1: 0.1}) is None


def write_run(run, curve, teacher=False, unfinished=False):
    """A finished run folder whose student mIoU is ``curve`` at iterations 1, 2, ... (a teacher
    0.1 above it with ``teacher``; only its first records with ``unfinished``)."""
    run.mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"optim": {"iters": len(curve)}}))
    lines = []
    for it, miou in enumerate(curve, 1):
        record = {"iteration": it, "event": "eval", "wall_s": 60.0 * it,
                  "student/miou": miou, "student/iou": {"bg": 2 * miou, "fg": None}}
        if teacher:
            record |= {"teacher/miou": miou + 0.1, "teacher/iou": {"bg": 0.9, "fg": None}}
        lines += [json.dumps({"iteration": it, "event": "train", "wall_s": 60.0 * it,
                              "imas/hardness_mean": 0.5}), json.dumps(record)]
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] if unfinished else lines) + "\n")


def fake_suite(out, unfinished: str | None = None):
    """A suite folder with variants ``ref`` (student only) and ``mt`` (student and teacher)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps({"suite": "suites/fake.yaml", "reference": "ref",
                                            "variants": ["ref", "mt"], "seeds": [0, 1, 2]}))
    for variant, scores in (("ref", REF), ("mt", MT)):
        for seed, curve in scores.items():
            write_run(out / variant / f"seed{seed}", curve, variant == "mt", f"{variant}/seed{seed}" == unfinished)


def test_report_numbers(tmp_path):
    fake_suite(tmp_path)
    write_report(tmp_path, predictions=0)
    rows = {(r["variant"], r["metric"]): r for r in csv.DictReader(open(tmp_path / "report.csv"))}
    assert float(rows["ref", "student/last"]["mean"]) == pytest.approx(0.6)
    assert float(rows["ref", "student/last"]["std"]) == pytest.approx(0.1)
    assert float(rows["ref", "student/best"]["mean"]) == pytest.approx((0.65 + 0.60 + 0.70) / 3)
    last = rows["mt", "student/last"]
    assert float(last["diff"]) == pytest.approx(0.17 / 3) and last["pairs"] == "3"
    # the reference has no teacher: mt's teacher (its student + 0.1) is compared to ref's student
    teacher = rows["mt", "teacher/last"]
    assert float(teacher["diff"]) == pytest.approx(0.17 / 3 + 0.1)
    assert float(teacher["ci_low"]) == pytest.approx(float(last["ci_low"]) + 0.1)
    assert float(rows["ref", "student/iou/bg"]["mean"]) == pytest.approx(1.2)
    assert ("ref", "student/iou/fg") not in rows            # absent class: no value
    assert float(rows["mt", "wall_s"]["mean"]) == 120.0
    text = (tmp_path / "report.md").read_text()
    assert "| `ref` | 3 | 2 | 60.0 ± 10.0 | 65.0 ± 5.0 | – | – | 2.0 min |" in text
    half = 100 * 4.303 * math.sqrt(0.0032666667 / 2) / math.sqrt(3)
    assert f"| `mt` | +5.7 [{100 * 0.17 / 3 - half:+.1f}, {100 * 0.17 / 3 + half:+.1f}] |" in text
    assert "**last**" in text and "**best**" in text and "has no teacher" in text


def test_report_figures_or_a_note(tmp_path):
    fake_suite(tmp_path)
    text = write_report(tmp_path, predictions=0).read_text()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert "no plots: matplotlib is not installed" in text
    else:
        for name in ("miou_curves.png", "miou_last.png", "hardness.png"):
            assert (tmp_path / name).stat().st_size > 0 and f"({name})" in text


def test_unfinished_runs_are_left_out_and_listed(tmp_path):
    fake_suite(tmp_path, unfinished="mt/seed2")
    results = load_results(tmp_path)
    assert sorted(results.eval_records["mt", None]) == [0, 1] and results.unfinished == ("mt/seed2",)
    log = tmp_path / "mt/seed2/train.log"
    log.write_text("$ python -m ssseg train ...\nTraceback (most recent call last):\n  ...\nRuntimeError: boom\n")
    mark(tmp_path / "mt/seed2", "failed", exit_code=1, log=str(log))
    text = write_report(tmp_path, predictions=0).read_text()
    assert "## Runs not finished (left out): 1 of 6 runs" in text
    assert f"- `mt/seed2`: failed (exit code 1; log: {log})\n  last lines of {log}:\n\n  ```\n" \
           "  Traceback (most recent call last):\n    ...\n  RuntimeError: boom\n  ```" in text


def failed_suite(out, seeds=(0, 1)):
    """A suite folder (variants a and b) whose runs all failed on a full disk."""
    (out / MANIFEST).parent.mkdir(parents=True, exist_ok=True)
    runs = [f"{v}/seed{s}" for v in ("a", "b") for s in seeds]
    (out / MANIFEST).write_text(json.dumps({"suite": "full.yaml", "reference": None, "supervised": [],
                                            "variants": ["a", "b"], "seeds": list(seeds), "runs": runs}))
    for name in runs:
        (out / name).mkdir(parents=True)
        (out / name / "recipe.yaml").write_text("optim: {iters: 4}\n")
        (out / name / "train.log").write_text(f"$ python -m ssseg train {name}\nssseg: error: no space left on "
                                               f"{out / name} (writing last.pt)\n")
        mark(out / name, "failed", exit_code=2, log=str(out / name / "train.log"))
    return runs


def test_a_suite_where_no_run_finished_gets_a_report_that_says_so(tmp_path, capsys):
    runs = failed_suite(tmp_path)
    assert main(["suite", "report", str(tmp_path)]) == 0
    assert capsys.readouterr().err == ""
    text = (tmp_path / "report.md").read_text()
    assert "**No run has finished** (0 of 4 runs)" in text
    for name in runs:
        log = tmp_path / name / "train.log"
        assert f"- `{name}`: failed (exit code 2; log: {log})" in text
        assert f"  ssseg: error: no space left on {tmp_path / name} (writing last.pt)" in text
    assert (tmp_path / "report.csv").read_text() == ",".join(CSV_COLUMNS) + "\n"
    assert not list(tmp_path.glob("*.png")) and not (tmp_path / "report.lock").exists()


def test_a_report_before_any_run_finished_lists_their_states(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"suite": "s.yaml", "variants": ["a"], "seeds": [0, 1],
                                                 "runs": ["a/seed0", "a/seed1"]}))
    (tmp_path / "a/seed0").mkdir(parents=True)
    (tmp_path / "a/seed0/recipe.yaml").write_text("optim: {iters: 4}\n")
    mark(tmp_path / "a/seed0", "running")
    text = write_report(tmp_path, predictions=4).read_text()
    assert "**No run has finished** (0 of 2 runs)" in text
    assert "- `a/seed0`: running (iteration 0 of 4 on" in text and "- `a/seed1`: new" in text


def test_a_report_on_a_full_disk_is_one_line_and_leaves_the_previous_one(tmp_path, capsys, monkeypatch):
    failed_suite(tmp_path)
    (tmp_path / "report.md").write_text("the previous report\n")
    fail_writes(monkeypatch, tmp_path)
    assert main(["suite", "report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err == f"ssseg: error: no space left on {tmp_path} (writing report.lock)\n"
    assert (tmp_path / "report.md").read_text() == "the previous report\n"
    assert not list(tmp_path.glob("*.tmp")) and not (tmp_path / "report.lock").exists()


def test_the_interval_note_uses_the_suites_number_of_seeds(tmp_path):
    fake_suite(tmp_path)
    assert "(t = 4.30 for 3 seeds)" in write_report(tmp_path, predictions=0).read_text()
    manifest = json.loads((tmp_path / MANIFEST).read_text()) | {"seeds": [0, 1]}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    text = write_report(tmp_path, predictions=0).read_text()
    assert "(t = 12.71 for 2 seeds)" in text and "4.30" not in text
    (tmp_path / MANIFEST).write_text(json.dumps(manifest | {"seeds": [0]}))
    assert "With 1 seed there is no interval" in write_report(tmp_path, predictions=0).read_text()


def test_a_folder_without_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a suite output folder"):
        load_results(tmp_path)


def test_the_reference_is_the_best_supervised_row_unless_the_suite_names_one(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({
        "suite": "s.yaml", "reference": None, "supervised": ["sup16", "sup8"],
        "variants": ["sup16", "sup8", "semi"], "seeds": [0, 1]}))
    for variant, last in (("sup16", 0.60), ("sup8", 0.65), ("semi", 0.70)):
        for seed in (0, 1):
            write_run(tmp_path / variant / f"seed{seed}", (0.9, last + seed / 100))
    results = load_results(tmp_path)
    assert results.reference == "sup8"      # the highest last mIoU among the supervised-only rows
    text = markdown(results, [], [])
    assert "Reference: `sup8`, the best supervised-only row (student mIoU, last evaluation, mean over " \
           "its runs: `sup8` 65.5, `sup16` 60.5)." in text
    assert "| `semi` | +5.0 [+5.0, +5.0] | +0.0 [+0.0, +0.0] |" in text     # last, then best (0.9 each)
    manifest = json.loads((tmp_path / MANIFEST).read_text()) | {"reference": "sup16"}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    assert load_results(tmp_path).reference == "sup16"


def test_a_suite_with_an_axis_reports_the_papers_table(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({
        "suite": "budgets.yaml", "reference": None, "supervised": ["sup"], "variants": ["sup", "semi"],
        "axis": {"key": "data.split", "label": "labels", "values": ["10", "20"]}, "seeds": [0, 1]}))
    # last mIoU: sup 0.50 / 0.60 at 10 / 20 labels, semi +0.10 / +0.02; seed 1 is 0.02 higher
    for variant, point, last, best in (("sup", "10", 0.50, 0.55), ("sup", "20", 0.60, 0.60),
                                       ("semi", "10", 0.60, 0.60), ("semi", "20", 0.62, 0.70)):
        for seed in (0, 1):
            write_run(tmp_path / variant / point / f"seed{seed}", (best + seed / 50, last + seed / 50))
    text = write_report(tmp_path, predictions=0).read_text()
    assert "axis labels: 10, 20." in text
    table = text.split("## Student mIoU by labels, last evaluation\n\n", 1)[1]
    assert table.startswith("| method | labels 10 | labels 20 |\n|---|---|---|\n"
                            "| `sup` | 51.0 ± 1.4 | 61.0 ± 1.4 |\n| `semi` | 61.0 ± 1.4 | 63.0 ± 1.4 |\n")
    assert "| `sup` | 56.0 ± 1.4 | 61.0 ± 1.4 |" in text.split("best evaluation", 1)[1]
    assert "| `semi` | +10.0 [+10.0, +10.0] | +2.0 [+2.0, +2.0] |" in text   # paired at each budget
    assert "| `semi · 20` | 2 | 2 | 63.0 ± 1.4 | 71.0 ± 1.4 | 2.0 min |" in text
    rows = {(r["variant"], r["axis_value"], r["metric"]): r for r in csv.DictReader(open(tmp_path / "report.csv"))}
    assert float(rows["semi", "20", "student/best"]["diff"]) == pytest.approx(0.10)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert (tmp_path / "miou_by_axis.png").stat().st_size > 0 and "(miou_by_axis.png)" in text


def drawn_figures(monkeypatch) -> list:
    """The figures the report draws, kept open (matplotlib's close records them instead)."""
    plt = pytest.importorskip("matplotlib.pyplot")
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    return figures


def titled(figures, prefix):
    return next(fig for fig in figures if fig.axes[0].get_title().startswith(prefix))


def test_a_variant_has_one_colour_in_every_panel_and_each_evaluation_a_marker(tmp_path, monkeypatch):
    figures = drawn_figures(monkeypatch)
    fake_suite(tmp_path)                  # ref evaluates a student; mt a student and a teacher
    write_report(tmp_path, predictions=0)
    student, teacher = titled(figures, "student val mIoU").axes
    colours = {line.get_label(): line.get_color() for line in student.get_lines()}
    assert [line.get_label() for line in teacher.get_lines()] == ["mt"]
    assert teacher.get_lines()[0].get_color() == colours["mt"] != colours["ref"]
    assert all(line.get_marker() == "o" for ax in (student, teacher) for line in ax.get_lines())


def test_method_and_axis_value_are_colour_and_line_style(tmp_path, monkeypatch):
    figures = drawn_figures(monkeypatch)
    (tmp_path / MANIFEST).write_text(json.dumps({
        "suite": "budgets.yaml", "variants": ["sup", "semi"], "seeds": [0],
        "axis": {"key": "data.split", "label": "labels", "values": ["10", "20"]}}))
    for variant in ("sup", "semi"):
        for point in ("10", "20"):
            write_run(tmp_path / variant / point / "seed0", (0.5, 0.6))
    write_report(tmp_path, predictions=0)
    lines = {line.get_label(): line for line in titled(figures, "student val mIoU").axes[0].get_lines()}
    assert lines["sup · 10"].get_color() == lines["sup · 20"].get_color() != lines["semi · 10"].get_color()
    assert lines["sup · 10"].get_linestyle() == lines["semi · 10"].get_linestyle() != lines["sup · 20"].get_linestyle()
    by_axis = titled(figures, "student mIoU, last").axes[0]
    assert {c.get_label(): c.lines[0].get_color() for c in by_axis.containers} == \
        {"sup": lines["sup · 10"].get_color(), "semi": lines["semi · 10"].get_color()}
