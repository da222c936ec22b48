"""Progress lines: nothing for short waits, plain lines with count/ETA for long ones, a tqdm bar."""

import io

import pytest

from ssseg.progress import Progress, eta_text, pick_style, track


def test_short_wait_prints_nothing():
    out = io.StringIO()
    assert list(track(range(5), 5, "eval", stream=out, style="plain", every_s=60)) == list(range(5))
    assert out.getvalue() == ""


def test_long_wait_prints_count_rate_eta_and_a_final_line():
    out = io.StringIO()
    with Progress(4, "eval", "images", stream=out, style="plain", every_s=0) as p:
        p.note(running=2)
        p.update()
        p.update()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("eval: 1/4 images (25%), running 2, ") and "eta" in lines[0]
    assert len(lines) == 2 and lines[1].startswith("eval: 2/4 images (50%)")  # no extra final line


def test_off_prints_nothing():
    out = io.StringIO()
    with Progress(2, "x", stream=out, style="off", every_s=0) as p:
        p.update(2)
    assert out.getvalue() == ""


def test_bar_uses_tqdm():
    pytest.importorskip("tqdm")
    out = io.StringIO()
    with Progress(3, "suite", "runs", stream=out, style="bar") as p:
        p.update(3)
    assert "suite:" in out.getvalue() and "/3 [" in out.getvalue()  # a tqdm bar line


def test_style_from_environment(monkeypatch):
    monkeypatch.setenv("SSSEG_PROGRESS", "off")
    assert pick_style(io.StringIO()) == "off"
    monkeypatch.setenv("SSSEG_PROGRESS", "")
    assert pick_style(io.StringIO()) == "plain"  # not a terminal


@pytest.mark.parametrize("s, text", [(42, "42 s"), (210, "3.5 min"), (7560, "2.1 h")])
def test_eta_text(s, text):
    assert eta_text(s) == text


def test_the_final_line_is_printed_once_when_the_last_update_printed_it():
    out = io.StringIO()
    with Progress(3, "x", stream=out, style="plain", every_s=0) as p:
        p.update(3)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("x: 3/3 it (100%)")
