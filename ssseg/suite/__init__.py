"""Suites: recipes × variants × seeds, run as subprocesses and compared in a report."""
