"""Reading a `widthwise-space/1` spec: its caps, its one-line errors, its fields and its variables.

The caps hold before a spec is parsed any further (`check_spec_size` on an object a frame
already decoded, `load_spec_text` on a file's bytes); every reader names where in the spec
it is (stage, block, field) and the path of the value (`space_spec.stages[2].blocks[1].kernel`).
"""

from __future__ import annotations

import json
import re
from typing import Mapping

from .errors import BadRequest
from .families import width_grid
from .mobilenet_v2 import expansion_grid
from .space_model import LayerSpec

SPEC_FORMAT = "widthwise-space/1"

#: caps on a spec, checked before it is parsed any further (a hand-written family is far smaller)
MAX_SPEC_BYTES = 64 * 1024  # of its compact JSON
MAX_DEPTH = 6  # nesting of objects and lists: spec > stages > stage > blocks > block > value
MAX_NODES = 20_000  # JSON values in all
MAX_STAGES = 64
MAX_BLOCKS = 256  # blocks as written (an inverted residual may make two)
MAX_VARIABLES = 256
MAX_CHOICES = 256  # per variable: a width grid has at most a few hundred values
MAX_LEVELS = 256
MAX_WIDTH = 1 << 16
MAX_OPTION_VALUE = 16  # an expansion ratio
DEFAULT_LEVELS = 14

TOP_KEYS = ("format", "name", "input", "attrs", "levels", "variables", "stages", "doc")
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
DTYPES = ("float32", "int64")
ATTR_KEYS = ("vocab", "dim", "tokens")


def spec_error(where: str, field: str, message: str, path: str = "") -> BadRequest:
    """The one-line refusal of a spec: `where: field "x": message` (where: "stage 3 block 2 (name)")."""
    head = f"{where}: " if where else ""
    return BadRequest(f"space spec: {head}field \"{field}\": {message}", field="space_spec" + path)


# --- size, before anything else ---------------------------------------------------------


def check_spec_size(obj: object) -> str:
    """Refuse a spec nested too deeply, with too many values or too many bytes; its compact JSON.

    The walk is iterative and stops at the first cap, so its cost is bounded by the caps."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise spec_error("", "spec", f"more than {MAX_NODES:,} values; a spec holds at most that many")
        if isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                raise spec_error("", "spec", f"nested deeper than {MAX_DEPTH} levels")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)
            if isinstance(value, dict) and not all(isinstance(k, str) for k in value):
                raise spec_error("", "spec", "object keys must be strings")
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:  # NaN or infinity, or a value JSON has no form for
        raise spec_error("", "spec", f"holds a value JSON cannot carry: {exc}") from None
    if len(text.encode("utf-8")) > MAX_SPEC_BYTES:
        raise spec_error("", "spec", f"{len(text.encode('utf-8')):,} bytes as compact JSON, above the cap of "
                                     f"{MAX_SPEC_BYTES:,}")
    return text


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON allows")


def load_spec_text(text: str | bytes, source: str = "spec") -> dict:
    """A spec file's bytes as a JSON object: size and nesting refused before JSON is parsed."""
    raw = text.encode("utf-8") if isinstance(text, str) else bytes(text)
    if len(raw) > 4 * MAX_SPEC_BYTES:  # room for indentation and comments-free prose in "doc"
        raise spec_error("", "spec", f"{source} is more than {4 * MAX_SPEC_BYTES:,} bytes, the cap of a spec file")
    depth = deepest = 0
    in_string = escaped = False
    for ch in raw.decode("utf-8", errors="replace"):
        if in_string:
            escaped, in_string = (False, True) if escaped else (ch == "\\", ch != '"')
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_DEPTH:
                raise spec_error("", "spec", f"{source} is nested deeper than {MAX_DEPTH} levels")
        elif ch in "]}":
            depth -= 1
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise spec_error("", "spec", f"{source} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise spec_error("", "spec", f"{source} must hold a JSON object, got {type(obj).__name__}")
    return obj


# --- small readers: each names where it is in the spec --------------------------------------


def read_int(obj: Mapping, key: str, where: str, *, lo: int, hi: int, default: int | None = None,
             what: str = "an integer", path: str = "") -> int:
    """obj[key] as an int in [lo, hi] (or `default` when absent and one is given)."""
    if key not in obj:
        if default is None:
            raise spec_error(where, key, "is missing", path)
        return default
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise spec_error(where, key, f"must be {what} from {lo} to {hi}, got {value!r}", f"{path}.{key}")
    return value


def read_name(obj: Mapping, key: str, where: str, *, path: str = "", default: str | None = None) -> str:
    """obj[key] as a name: a letter, then up to 63 letters, digits, '_', '.', '-'."""
    if key not in obj and default is not None:
        return default
    value = obj.get(key)
    if not isinstance(value, str) or not NAME_RE.match(value):
        got = "missing" if key not in obj else f"got {value!r}"
        raise spec_error(where, key, "must be a name (a letter, then up to 63 letters, digits, '_', '.', '-'), "
                                     + got, f"{path}.{key}")
    return value


def check_keys(obj: object, known: tuple[str, ...], where: str, what: str, path: str = "") -> Mapping:
    """`obj` as an object with only `known` keys; an unknown key is named with the known ones."""
    if not isinstance(obj, Mapping):
        raise spec_error(where, what, f"must be an object, got {type(obj).__name__}", path)
    for key in obj:
        if key not in known:
            raise spec_error(where, key, f"unknown; {what} takes {', '.join(known)}", f"{path}.{key}")
    return obj


def read_list(obj: Mapping, key: str, where: str, *, cap: int, path: str = "") -> list:
    """obj[key] as a non-empty list of at most `cap` items."""
    value = obj.get(key)
    if not isinstance(value, list) or not value:
        raise spec_error(where, key, "must be a non-empty list" + ("" if key in obj else ", and is missing"),
                         f"{path}.{key}")
    if len(value) > cap:
        raise spec_error(where, key, f"has {len(value):,} items, above the cap of {cap:,}", f"{path}.{key}")
    return value


# --- variables --------------------------------------------------------------------------------

VARIABLE_KEYS = ("name", "group", "choices", "grid", "base", "options")
GRID_KEYS = ("base", "levels", "lo", "hi", "multiple", "include_base")
OPTION_KEYS = ("kernel", "expand", "keep")
OPTION_GRID_KEYS = ("kernel", "expand", "skip")


def _increasing(values: list, where: str, key: str, path: str, *, lo: int = 1, hi: int = MAX_WIDTH) -> tuple:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise spec_error(where, key, f"must be integers from {lo} to {hi}, got {v!r}", path)
    if any(b <= a for a, b in zip(values, values[1:])):
        raise spec_error(where, key, f"must be strictly increasing, got {values}", path)
    return tuple(values)


def _grid(obj: object, where: str, levels: int, path: str) -> tuple[int, tuple[int, ...]]:
    """(base, choices) of a grid rule: `width_grid` (with the 1.0x point when include_base)."""
    grid = check_keys(obj, GRID_KEYS, where, "grid", path)
    base = read_int(grid, "base", where, lo=1, hi=MAX_WIDTH, path=path)
    levels = read_int(grid, "levels", where, lo=1, hi=MAX_LEVELS, default=levels, path=path)
    multiple = read_int(grid, "multiple", where, lo=1, hi=256, default=8, path=path)
    bounds = []
    for key, default in (("lo", 0.2), ("hi", 1.5)):
        value = grid.get(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 16:
            raise spec_error(where, key, f"must be a number in (0, 16], got {value!r}", f"{path}.{key}")
        bounds.append(float(value))
    if bounds[0] > bounds[1]:
        raise spec_error(where, "lo", f"must not exceed hi ({bounds[1]}), got {bounds[0]}", f"{path}.lo")
    include = grid.get("include_base", False)
    if not isinstance(include, bool):
        raise spec_error(where, "include_base", f"must be true or false, got {include!r}", f"{path}.include_base")
    if include and (bounds, multiple) == ([0.2, 1.5], 8):
        return base, expansion_grid(base, levels)
    choices = width_grid(base, levels, lo=bounds[0], hi=bounds[1], multiple=multiple)
    if include:
        one = max(multiple, int(base / multiple + 0.5) * multiple)
        choices = tuple(sorted(set(choices) | {one}))
    if max(choices) > MAX_WIDTH:
        raise spec_error(where, "grid", f"reaches width {max(choices):,}, above the cap of {MAX_WIDTH:,}", path)
    return base, choices


def _option(obj: object, where: str, path: str) -> tuple[tuple[str, int], ...]:
    """One option as sorted (key, int) pairs; kept options carry kernel and expand, a skip nothing else."""
    opt = check_keys(obj, OPTION_KEYS, where, "an option", path)
    keep = read_int(opt, "keep", where, lo=0, hi=1, default=1, path=path)
    if not keep:
        if len(opt) > 1:
            raise spec_error(where, "keep", "a skipped block (keep 0) takes no kernel or expand", f"{path}.keep")
        return (("keep", 0),)
    kernel = read_kernel(opt, where, path)
    expand = read_int(opt, "expand", where, lo=1, hi=MAX_OPTION_VALUE, path=path)
    return (("expand", expand), ("keep", 1), ("kernel", kernel))


def read_kernel(obj: Mapping, where: str, path: str, default: int | None = None) -> int:
    """A kernel size: an odd integer from 1 to 11."""
    kernel = read_int(obj, "kernel", where, lo=1, hi=11, default=default, what="an odd integer", path=path)
    if kernel % 2 == 0:
        raise spec_error(where, "kernel", f"must be an odd integer from 1 to 11, got {kernel}", f"{path}.kernel")
    return kernel


def _options(obj: object, where: str, path: str) -> tuple[tuple[tuple[str, int], ...], ...]:
    """An option variable's options: a list of options, or {"kernel": [...], "expand": [...], "skip": bool}
    (skip is code 0, then kernel-major: k3e3, k3e4, ..., as ofa_mbv3 numbers them)."""
    if isinstance(obj, list):
        if not obj or len(obj) > MAX_CHOICES:
            raise spec_error(where, "options", f"must list 1 to {MAX_CHOICES} options", path)
        out = tuple(_option(o, where, f"{path}[{k}]") for k, o in enumerate(obj))
    else:
        grid = check_keys(obj, OPTION_GRID_KEYS, where, "options", path)
        kernels = _increasing(read_list(grid, "kernel", where, cap=6, path=path), where, "kernel", f"{path}.kernel",
                              hi=11)
        if any(k % 2 == 0 for k in kernels):
            raise spec_error(where, "kernel", f"must be odd integers from 1 to 11, got {list(kernels)}", path)
        expands = _increasing(read_list(grid, "expand", where, cap=MAX_OPTION_VALUE, path=path), where, "expand",
                              f"{path}.expand", hi=MAX_OPTION_VALUE)
        skip = grid.get("skip", False)
        if not isinstance(skip, bool):
            raise spec_error(where, "skip", f"must be true or false, got {skip!r}", f"{path}.skip")
        kept = tuple((("expand", e), ("keep", 1), ("kernel", k)) for k in kernels for e in expands)
        out = ((("keep", 0),),) * skip + kept
    if len(set(out)) != len(out):
        raise spec_error(where, "options", "lists an option twice", path)
    return out


def parse_variables(spec: Mapping, levels: int) -> tuple[LayerSpec, ...]:
    """The spec's `variables`, in configuration order, each with its choices (list, grid or options)."""
    out: list[LayerSpec] = []
    seen: set[str] = set()
    for k, obj in enumerate(read_list(spec, "variables", "", cap=MAX_VARIABLES)):
        path = f".variables[{k}]"
        where = f"variable {k + 1}"
        var = check_keys(obj, VARIABLE_KEYS, where, "a variable", path)
        name = read_name(var, "name", where, path=path)
        where = f"variable {k + 1} ({name})"
        if name in seen:
            raise spec_error(where, "name", "is used by an earlier variable", f"{path}.name")
        seen.add(name)
        group = read_name(var, "group", where, path=path, default="") if "group" in var else ""
        given = [key for key in ("choices", "grid", "options") if key in var]
        if len(given) != 1:
            raise spec_error(where, "choices", "give exactly one of choices, grid or options"
                             + (f", got {', '.join(given)}" if given else ""), path)
        if "options" in var:
            options = _options(var["options"], where, f"{path}.options")
            codes = tuple(range(len(options)))
            if "base" in var:
                raise spec_error(where, "base", "an option variable has no base width", f"{path}.base")
            out.append(LayerSpec(name, codes[-1], codes, group, options=options))
            continue
        if "grid" in var:
            if "base" in var:
                raise spec_error(where, "base", "a grid variable's base is its grid's base", f"{path}.base")
            base, choices = _grid(var["grid"], where, levels, f"{path}.grid")
        else:
            choices = _increasing(read_list(var, "choices", where, cap=MAX_CHOICES, path=path), where, "choices",
                                  f"{path}.choices")
            base = read_int(var, "base", where, lo=1, hi=MAX_WIDTH, default=choices[-1], path=path)
        if len(choices) > MAX_CHOICES:
            raise spec_error(where, "grid", f"has {len(choices)} choices, above the cap of {MAX_CHOICES}", path)
        out.append(LayerSpec(name, base, tuple(choices), group))
    return tuple(out)
