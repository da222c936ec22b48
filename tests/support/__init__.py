"""Helpers of ssseg's tests: tiny recipes, test plugins (``recorder``, ``faulty``: recipes name
them as ``use: "support.recorder:Recorder"``), faults of the disk, a fake SLURM, data trees and
the resume-equivalence check. ``TESTS`` is the tests folder, ``REPO`` the repository."""

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
