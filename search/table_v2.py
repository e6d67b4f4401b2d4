"""The `widthwise-table/2` reader: named variables, factors over one or two of them, the pairs a forest."""

from __future__ import annotations

from .errors import TableError
from .table import Factor, Table, Variable, depth_runs
from .table_checks import created, label_list, metadata, nested_array, non_negative, width_list
from .tree import CycleError, tree_structure

__all__ = ["parse_v2"]

_KNOWN = {"format", "unit", "space", "variables", "factors", "constant_ms", "device", "runtime", "fit", "created"}


def parse_v2(obj: dict, source: str | None) -> Table:
    """A validated tree Table from a parsed `/2` object (format and unit already checked)."""
    space = obj.get("space")
    if not isinstance(space, dict):
        raise TableError("space", "missing or not an object", source)
    if not isinstance(space.get("name", ""), str):
        raise TableError("space.name", f"must be a string, got {space.get('name')!r}", source)
    variables = _variables(obj.get("variables"), source)
    factors = _factors(obj.get("factors"), variables, source)
    names = [v.name for v in variables]
    try:
        tree_structure(len(variables), [f.variables for f in factors if len(f.variables) == 2], names)
    except CycleError as exc:
        raise CycleError(exc.problem, exc.variables, source) from None
    try:
        depth_runs(space, names, [v.choices for v in variables])
    except ValueError as exc:
        raise TableError("space.depth_runs", str(exc), source) from None
    constant = non_negative(obj.get("constant_ms", 0.0), "constant_ms", source)
    meta = metadata(obj, source)
    return Table(space=space, variables=variables, factors=factors, constant_ms=constant, unit="ms",
                 device=meta["device"], runtime=meta["runtime"], fit=meta["fit"], created=created(obj, source),
                 extra={k: v for k, v in obj.items() if k not in _KNOWN})


def _unique_name(item: dict, where: str, seen: dict[str, int], what: str, source: str | None) -> str:
    """The entry's `name`: a non-empty string not used by an earlier entry of `what` (recorded in `seen`)."""
    name = item.get("name")
    if not isinstance(name, str) or not name:
        raise TableError(f"{where}.name", f"must be a non-empty string, got {name!r}", source)
    if name in seen:
        raise TableError(f"{where}.name", f"repeats the name {name!r} of {what}[{seen[name]}]", source)
    seen[name] = len(seen)
    return name


def _variables(raw: object, source: str | None) -> list[Variable]:
    """The validated variables: unique names, strictly increasing choices, an optional group, and
    optional labels (one string per choice: an option variable, whose choices are codes from 0)."""
    if not isinstance(raw, list) or not raw:
        raise TableError("variables", "must be a non-empty list of {name, choices} objects", source)
    out: list[Variable] = []
    first: dict[str, int] = {}
    for k, item in enumerate(raw):
        where = f"variables[{k}]"
        if not isinstance(item, dict):
            raise TableError(where, "must be an object with 'name' and 'choices'", source)
        name = _unique_name(item, where, first, "variables", source)
        labelled = "labels" in item
        choices = width_list(item.get("choices"), f"{where}.choices", source, lowest=0 if labelled else 1)
        if any(b <= a for a, b in zip(choices, choices[1:])):
            raise TableError(f"{where}.choices", f"must be strictly increasing, got {list(choices)}", source)
        group = item.get("group", "")
        if not isinstance(group, str):
            raise TableError(f"{where}.group", f"must be a string, got {group!r}", source)
        labels = label_list(item["labels"], len(choices), f"{where}.labels", source) if labelled else ()
        out.append(Variable(name, choices, group, labels))
    return out


def _factors(raw: object, variables: list[Variable], source: str | None) -> list[Factor]:
    """The validated factors, each over one or two distinct known variables, arrays of matching shape."""
    if not isinstance(raw, list) or not raw:
        raise TableError("factors", "must be a non-empty list of factor objects", source)
    index = {v.name: k for k, v in enumerate(variables)}
    out: list[Factor] = []
    seen: dict[str, int] = {}
    for k, item in enumerate(raw):
        where = f"factors[{k}]"
        if not isinstance(item, dict):
            raise TableError(where, "must be an object", source)
        name = _unique_name(item, where, seen, "factors", source)
        kind = item.get("kind", "")
        if not isinstance(kind, str):
            raise TableError(f"{where}.kind", f"must be a string, got {kind!r}", source)
        over = _factor_variables(item.get("variables"), index, f"{where}.variables", source)
        axes = [(len(variables[v].choices), f"choice of {variables[v].name}") for v in over]
        ms = nested_array(item.get("ms"), axes, f"{where}.ms", source)
        counts = {key: nested_array(item[key], axes, f"{where}.{key}", source)
                  for key in ("macs", "params") if item.get(key) is not None}
        out.append(Factor(name, kind, over, ms, counts.get("macs"), counts.get("params")))
    return out


def _factor_variables(raw: object, index: dict[str, int], where: str, source: str | None) -> tuple[int, ...]:
    """The indices of a factor's one or two variables, given by name."""
    if not isinstance(raw, list) or not 1 <= len(raw) <= 2:
        got = f"{len(raw)} names" if isinstance(raw, list) else type(raw).__name__
        raise TableError(where, f"must list one or two variable names (a unary or pairwise factor), got {got}",
                         source)
    out = []
    for i, name in enumerate(raw):
        if not isinstance(name, str) or name not in index:
            raise TableError(f"{where}[{i}]", f"unknown variable {name!r}; the variables are listed in 'variables'",
                             source)
        out.append(index[name])
    if len(out) == 2 and out[0] == out[1]:
        raise TableError(where, f"names the variable {raw[0]!r} twice; a factor is over two distinct variables",
                         source)
    return tuple(out)
