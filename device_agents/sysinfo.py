"""Facts about the device the agent runs on, and a stable fingerprint of them.

The host stores every sample with the device's fingerprint, so tables from two boards
never mix; the facts are read once (they do not change while the agent runs).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform

#: /proc/cpuinfo keys that name the CPU, most specific first (x86, then ARM boards)
_CPUINFO_KEYS = ("model name", "Model", "Hardware", "cpu model", "Processor")


def _cpu_from_proc(path: str = "/proc/cpuinfo") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return ""
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if sep and key in _CPUINFO_KEYS and value and key not in found:
            found[key] = value
    for key in _CPUINFO_KEYS:
        if key in found:
            return found[key]
    return ""


def cpu_model() -> str:
    """The CPU's model name: /proc/cpuinfo where present, else what platform says."""
    return _cpu_from_proc() or platform.processor() or platform.machine() or "unknown"


@functools.lru_cache(maxsize=1)
def device_facts() -> dict:
    """cpu, cores, os, python, machine and host name of this device."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "os": f"{platform.system()} {platform.release()}".strip(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "node": platform.node(),
    }


def fingerprint(facts: dict | None = None) -> str:
    """Hex SHA-256 of the device facts in canonical JSON: equal devices, equal fingerprints."""
    payload = json.dumps(facts if facts is not None else device_facts(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
