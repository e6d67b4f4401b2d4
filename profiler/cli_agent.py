"""`widthwise agent serve|info|bundle` and `widthwise bench`: the agent from the host side.

Every failure is one line naming the problem and a non-zero exit (`cli_errors`); `--json`
prints the agent's response as it came.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

import click

from widthwise.device_agents.handlers import DTYPES
from widthwise.device_agents.spaces import Space
from widthwise.device_agents.statistics import STATISTICS
from widthwise.errors import cli_errors

from .agent_client import AgentClient, connect, token_from_file
from .cli_options import (agent_options, open_space, space_choice, space_configuration, space_options, variable_lines,
                          widths_option)
from .errors import OutputError

BUNDLE_MAIN = '''"""widthwise device agent, bundled: python3 widthwise-agent.pyz serve --port 7345"""
from device_agents.__main__ import main

raise SystemExit(main())
'''


def _open_agent(url: str, token_file: str | None, timeout: float) -> AgentClient:
    """Connect to the agent at `url` with the token in `token_file` (if any)."""
    return connect(url, token=token_from_file(token_file), timeout=timeout)


@click.group()
def agent() -> None:
    """Run, inspect and package the device agent."""


@agent.command(
    "serve",
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Serve timing requests: every option is passed to `python -m widthwise.device_agents serve`
    (its argparse parser declares them once; `--help` shows them)."""
    from widthwise.device_agents.__main__ import main as agent_main  # noqa: PLC0415

    try:
        status = agent_main(["serve", *ctx.args])
    except SystemExit as exc:  # argparse: --help (0) or a bad option (2), its message already printed
        status = exc.code if isinstance(exc.code, int) else 2
    if status:
        sys.exit(status)


@agent.command("info")
@agent_options
@click.option("--json", "as_json", is_flag=True, help="print the hello response as JSON")
@cli_errors
def info(agent_url: str, token_file: str | None, timeout: float, as_json: bool) -> None:
    """Who the agent is: versions, runtimes, CPU, OS, a stable fingerprint, and the block kinds it
    builds per target (what a `--space-file` spec may use)."""
    with _open_agent(agent_url, token_file, timeout) as client:
        hello = client.hello()
    if as_json:
        click.echo(json.dumps(hello, indent=2, sort_keys=True))
        return
    proto = hello.get("protocol", {})
    rows = [
        ("agent", f"{agent_url} (agent {hello.get('agent_version')}, protocol {proto.get('version')})"),
        ("cpu", f"{hello.get('cpu')} ({hello.get('cores')} cores, {hello.get('machine')})"),
        ("os", f"{hello.get('os')}, python {hello.get('python')}"),
        ("runtimes", ", ".join(f"{k} {v}" for k, v in sorted(hello.get("runtimes", {}).items())) or "none"),
        ("spaces", ", ".join(hello.get("spaces", []))),
        ("fingerprint", str(hello.get("fingerprint"))),
    ]
    for k, (target, kinds) in enumerate(sorted((hello.get("block_kinds") or {}).items())):  # for --space-file
        rows.append(("block kinds" if k == 0 else "", f"{target + ':':<12} {', '.join(kinds)}"))
    for name, reason in sorted(hello.get("runtimes_unavailable", {}).items()):
        rows.append((f"  no {name}", reason))
    for key, value in rows:
        click.echo(f"{key:<12} {value}")


def build_bundle(out: Path) -> int:
    """Write a zipapp of device_agents (plus flatbuffers when importable); returns its size."""
    from widthwise import device_agents  # noqa: PLC0415

    src = Path(device_agents.__file__).resolve().parent
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo")
    with tempfile.TemporaryDirectory(prefix="widthwise-bundle-") as tmp:
        root = Path(tmp)
        shutil.copytree(src, root / "device_agents", ignore=ignore)
        try:
            import flatbuffers  # noqa: PLC0415

            shutil.copytree(Path(flatbuffers.__file__).resolve().parent, root / "flatbuffers", ignore=ignore)
        except ImportError:
            pass
        (root / "__main__.py").write_text(BUNDLE_MAIN)
        out.parent.mkdir(parents=True, exist_ok=True)
        zipapp.create_archive(root, target=out, interpreter="/usr/bin/env python3", compressed=True)
    return out.stat().st_size


@agent.command("bundle")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=Path("widthwise-agent.pyz"),
              show_default=True, help="the zipapp to write")
@cli_errors
def bundle(output: Path) -> None:
    """Package the agent as one file: copy it to a board, run `python3 FILE serve ...`."""
    try:
        size = build_bundle(output)
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc}", field="--output") from None
    click.echo(f"wrote {output} ({size / 1024:.0f} KiB): run it with `python3 {output.name} serve --port 7345`")


def format_result(result: dict, what: str, agent_url: str) -> list[str]:
    """The short human summary of a bench response."""
    stats = result.get("stats", {})
    rt = result.get("runtime", {})
    threads = rt.get("threads")
    lines = [
        f"agent     {agent_url}: {rt.get('name')} {rt.get('version')}, {threads} thread{'s' if threads != 1 else ''}, "
        f"{rt.get('dtype')}" + (f", delegate {rt['delegate']}" if rt.get("delegate") else ""),
        f"model     {what} ({result.get('model_bytes', 0) / 1e6:.1f} MB"
        + (f", built in {result['build_ms']:.0f} ms" if result.get("build_ms") is not None else "")
        + f", session {result.get('init_ms', 0):.0f} ms)",
        f"timing    {result.get('repeat')} repeats x {result.get('number')} runs, {result.get('warmup')} warm-up",
        "ms        " + "  ".join(f"{k} {stats[k]:.3f}" for k in STATISTICS if k in stats),
    ]
    if result.get("peak_rss_kb") is not None:
        lines.append(f"peak rss  {result['peak_rss_kb'] / 1024:.0f} MiB")
    lines += [f"warning   {w}" for w in result.get("warnings", [])]
    return lines


@click.command()
@agent_options
@space_options()
@widths_option(default_help="default: the 1.0x network's widths")
@click.option("--any-widths", is_flag=True, help="Accept widths off the space's choices (any positive width builds).")
@click.option("--list-variables", is_flag=True,
              help="Print the space's variables in --widths order, with their groups and choices, and exit.")
@click.option("--model", "model_path", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="time this .onnx or .tflite file instead of a spec")
@click.option("--runs", type=int, help="timed repeats (agent default 15)")
@click.option("--warmup", type=int, help="warm-up runs (agent default 3)")
@click.option("--threads", type=int, help="intra-op threads (agent default 1)")
@click.option("--runtime", help="onnxruntime, litert or tflite (default: the agent's first available)")
@click.option("--dtype", type=click.Choice(DTYPES), help="network dtype (spec only)")
@click.option("--seed", type=int, help="weight seed (spec only)")
@click.option("--json", "as_json", is_flag=True, help="print the agent's response as JSON")
@cli_errors
def bench(agent_url: str, token_file: str | None, timeout: float, space: str | None, space_file: Path | None,
          resolution: int | None,
          levels: int | None, space_param: tuple[str, ...], widths: list[int] | None, widths_json: str | None,
          any_widths: bool, list_variables: bool, model_path: Path | None, runs: int | None, warmup: int | None,
          threads: int | None, runtime: str | None, dtype: str | None, seed: int | None, as_json: bool) -> None:
    """Time one network on an agent: a space (built in, or a `--space-file` spec) with widths, or a model file.

    The widths are one per variable of the space, in its variable order (`--list-variables`
    prints it), or `--widths-json` by name; each must be one of its variable's choices
    unless `--any-widths`.
    """
    timing = {k: v for k, v in (("repeat", runs), ("warmup", warmup), ("threads", threads)) if v is not None}
    if model_path is not None:
        model = model_path.read_bytes()
        fmt = {".onnx": "onnx", ".tflite": "tflite"}.get(model_path.suffix.lower())
        what = f"{model_path.name}"
        call = lambda client: client.bench_model(model, fmt=fmt, runtime=runtime, timing=timing or None)  # noqa: E731
    else:
        space, params = space_choice(space, space_file, resolution, levels, space_param)
        chosen = open_space(space, params)
        if list_variables:
            _list_variables(chosen)
            return
        given = space_configuration(chosen, widths, widths_json, on_grid=not any_widths)
        width_list = list(chosen.base_widths()) if given is None else given
        spec: dict = {"space": space, "widths": width_list}
        if params:
            spec["params"] = params
        if dtype is not None:
            spec["dtype"] = dtype
        if seed is not None:
            spec["seed"] = seed
        what = f"{space}" + (f" r{resolution}" if resolution else "") + f" widths {','.join(map(str, width_list))}"
        call = lambda client: client.bench_spec(spec, runtime=runtime, timing=timing or None)  # noqa: E731
    with _open_agent(agent_url, token_file, timeout) as client:
        result = call(client)
    if as_json:
        click.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    for line in format_result(result, what, agent_url):
        click.echo(line)


def _list_variables(space: Space) -> None:
    """The space's variables in configuration order, with group and choices (and the 1.0x widths)."""
    click.echo(f"{space.name}: {space.num_layers} variables, in --widths order (index, name, group, choices)")
    layers = space.layers
    for line in variable_lines([v.name for v in layers], [v.choices for v in layers],
                               [v.group for v in layers]):
        click.echo(line)
    click.echo(f"1.0x widths: {','.join(map(str, space.base_widths()))}")
