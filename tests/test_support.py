"""The shared test helpers themselves."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.support.procs import read_line


def test_read_line_returns_a_line_that_comes():
    proc = subprocess.Popen([sys.executable, "-c", "print('ready', flush=True)"], stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(proc, 30).strip() == "ready"
    finally:
        proc.wait(30)


def test_read_line_kills_a_silent_process_within_its_bound():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    with pytest.raises(AssertionError, match="no line"):
        read_line(proc, 0.5)
    assert proc.wait(30) != 0
