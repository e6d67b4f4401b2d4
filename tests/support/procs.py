"""Reading from test subprocesses with a bound, so a silent child fails one test instead of hanging."""

from __future__ import annotations

import subprocess
import threading

DEFAULT_LINE_TIMEOUT_S = 60.0


def read_line(proc: subprocess.Popen, timeout: float = DEFAULT_LINE_TIMEOUT_S) -> str | bytes:
    """The next line of `proc.stdout`, or AssertionError (the process killed) if none comes within `timeout` s."""
    if proc.stdout is None:
        raise ValueError("the process was started without stdout=PIPE")
    result: list[str | bytes] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if reader.is_alive():
        proc.kill()
        raise AssertionError(f"no line from pid {proc.pid} within {timeout:g} s (the process was killed)")
    return result[0]
