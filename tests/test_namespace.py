"""One import name: widthwise runs the same from a folder whose files share our old top-level names."""

from __future__ import annotations

import ast
import configparser
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
WIDTHWISE = Path(sys.executable).with_name("widthwise")
EXAMPLE_TABLE = REPO / "tables" / "example-epyc2-mobilenet_v1-224.json"
SHADOWS = ("search", "profiler", "device_agents")
SCRIPT = """
from widthwise import Searcher, load_table, make_objective

table = load_table({table!r})
answer = Searcher(table, make_objective(table, "flops")).query(budget_ms=10.0)
print(",".join(map(str, answer.widths)))
"""


@pytest.fixture
def shadowed(tmp_path: Path) -> Path:
    """A working directory holding search.py, profiler.py and device_agents.py that must never run."""
    for name in SHADOWS:
        (tmp_path / f"{name}.py").write_text(
            f"open({str(tmp_path / 'ran')!r}, 'a').write({name!r} + '\\n')\nraise SystemExit('{name}.py ran')\n"
        )
    return tmp_path


def _run(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _assert_nothing_shadowed(result: subprocess.CompletedProcess, cwd: Path) -> None:
    assert result.returncode == 0, result.stderr[-2000:]
    assert not (cwd / "ran").exists(), f"a file of the working directory ran: {(cwd / 'ran').read_text()}"


def test_query_runs_beside_files_named_like_our_packages(shadowed: Path) -> None:
    result = _run([str(WIDTHWISE), "query", "--table", str(EXAMPLE_TABLE), "--budget-ms", "10", "--json"], shadowed)
    _assert_nothing_shadowed(result, shadowed)
    assert json.loads(result.stdout)["latency_ms"] <= 10.0 + 1e-9


def test_local_agent_and_collect_run_beside_files_named_like_our_packages(shadowed: Path) -> None:
    info = _run([str(WIDTHWISE), "agent", "info", "--agent", "local", "--json"], shadowed)
    _assert_nothing_shadowed(info, shadowed)
    assert "mobilenet_v1" in json.loads(info.stdout)["spaces"]
    db = shadowed / "two.sqlite"
    collect = _run([str(WIDTHWISE), "collect", "--agent", "local", "--samples", "2", "--db", str(db), "--resolution", "32",
                    "--levels", "3", "--timing", "repeat=2", "--json"], shadowed, timeout=170)
    _assert_nothing_shadowed(collect, shadowed)
    assert json.loads(collect.stdout)["samples"] == 2


def test_a_script_beside_them_imports_the_public_api(shadowed: Path) -> None:
    script = shadowed / "train.py"
    script.write_text(SCRIPT.format(table=str(EXAMPLE_TABLE)))
    result = _run([sys.executable, str(script)], shadowed)
    _assert_nothing_shadowed(result, shadowed)
    assert len(result.stdout.strip().split(",")) == 14


def test_no_module_of_ours_imports_the_old_top_level_names() -> None:
    old = {"device_agents", "profiler", "search"}
    offenders = []
    for folder in ("device_agents", "profiler", "search", "widthwise", "tests", "benchmarks", "docs"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                offenders += [f"{path.relative_to(REPO)}:{node.lineno}" for n in names if n.split(".")[0] in old]
    assert offenders == []


def test_the_install_puts_only_widthwise_on_the_path(tmp_path: Path) -> None:
    probe = "import importlib.util as u; print([n for n in ('device_agents', 'profiler', 'search', 'widthwise') if u.find_spec(n)])"
    result = _run([sys.executable, "-P", "-c", probe], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['widthwise']"
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    packages = config["options"]["packages"].split()
    assert packages and all(p == "widthwise" or p.startswith("widthwise.") for p in packages)
    on_disk = {
        "widthwise." + ".".join(init.parent.relative_to(REPO).parts)
        for folder in ("device_agents", "profiler", "search")
        for init in (REPO / folder).rglob("__init__.py")
    }
    assert on_disk <= set(packages), f"packages missing from setup.cfg: {sorted(on_disk - set(packages))}"
