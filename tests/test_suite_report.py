"""The suite report's statistics on fixed numbers, and report.md / report.csv from a fake folder."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from ssseg.errors import UserError
from ssseg.suite.report import load_results, paired_difference, summarize, t975, write_report
from ssseg.suite.runner import MANIFEST

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


def fake_suite(out, unfinished: str | None = None):
    """A suite folder with variants ``ref`` (student only) and ``mt`` (student and teacher)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).write_text(json.dumps({"suite": "suites/fake.yaml", "reference": "ref",
                                            "variants": ["ref", "mt"], "seeds": [0, 1, 2]}))
    for variant, scores in (("ref", REF), ("mt", MT)):
        for seed, curve in scores.items():
            run = out / variant / f"seed{seed}"
            run.mkdir(parents=True)
            (run / "recipe.yaml").write_text(yaml.safe_dump({"optim": {"iters": 2}}))
            lines = []
            for it, miou in enumerate(curve, 1):
                record = {"iteration": it, "event": "eval", "wall_s": 60.0 * it,
                          "student/miou": miou, "student/iou": {"bg": 2 * miou, "fg": None}}
                if variant == "mt":
                    record |= {"teacher/miou": miou + 0.1, "teacher/iou": {"bg": 0.9, "fg": None}}
                lines += [json.dumps({"iteration": it, "event": "train", "wall_s": 60.0 * it,
                                      "imas/hardness_mean": 0.5}), json.dumps(record)]
            if f"{variant}/seed{seed}" == unfinished:
                lines = lines[:2]
            (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")


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
    assert sorted(results.evals["mt"]) == [0, 1] and results.unfinished == ("mt/seed2",)
    text = write_report(tmp_path, predictions=0).read_text()
    assert "- `mt/seed2` (see its train.log)" in text


def test_a_folder_without_manifest_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a suite output folder"):
        load_results(tmp_path)
