"""A search space: its variables, its blocks, and the latency factors the blocks make.

A space is data. Its variables (`layers`) are the widths that vary; a configuration is one
flat tuple of ints, one value per variable in `layers` order. Its network is a sequence of
blocks in computation order; each block reads one, two or three widths (input, hidden,
output), each either a variable or fixed. Every block is one latency factor over the
variables it reads: unary or pairwise. When block k reads variables k-1 and k (the fixed
ends aside), the factors form a chain (`is_chain`); otherwise a tree.

An option variable (`LayerSpec.options`) is not a width but a code choosing a block's
kernel, expansion and whether it runs at all; a block reading one (`option_from`) resolves
its kernel and hidden width from the option, and becomes an `identity` when skipped.
Interchangeable skippable blocks form depth runs, and `canonical` writes a configuration
with its kept blocks first (depth d means the first d blocks).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import numpy as np

from .block_kinds import BlockSpec, BlockTemplate, block_counts, round_width
from .errors import BadRequest, BadWidths


@dataclass(frozen=True)
class LayerSpec:
    """A variable: its name, its reference width, its ordered choices and its group (stage).

    With `options`, an option variable: its choices are codes 0..len(options)-1 and
    `options[c]` are code c's sorted (key, int) attributes among kernel, expand and keep."""

    name: str
    base: int
    choices: tuple[int, ...]
    group: str = ""
    options: tuple[tuple[tuple[str, int], ...], ...] = ()

    @property
    def is_option(self) -> bool:
        """Whether the variable picks an option (kernel, expansion, keep) rather than a width."""
        return bool(self.options)

    def label(self, value: int) -> str:
        """How a value prints: "k5e4" or "skip" for an option code, the number for a width."""
        if not self.options:
            return str(value)
        return option_label(dict(self.options[int(value)]))


def option_label(opt: Mapping[str, int]) -> str:
    """The printed name of one option: "skip" when not kept, else "k<kernel>e<expand>"."""
    if not opt.get("keep", 1):
        return "skip"
    return f"k{opt.get('kernel', 0)}e{opt.get('expand', 0)}"


@dataclass(frozen=True)
class FactorSpec:
    """A latency term: the op of block `block`, over one or two variables (their indices)."""

    name: str
    kind: str
    block: int
    variables: tuple[int, ...]


def chain_templates(templates: Sequence[BlockTemplate], input_channels: int,
                    output_channels: int) -> tuple[BlockTemplate, ...]:
    """Wire L+1 templates as a chain: block k reads variable k-1 and writes variable k."""
    last = len(templates) - 1
    wired = []
    for k, t in enumerate(templates):
        wired.append(BlockTemplate(
            t.name, t.kind, t.stride, t.kernel, t.in_hw, t.out_hw,
            cin_from=None if k == 0 else k - 1, cout_from=None if k == last else k,
            cin=input_channels if k == 0 else 0, cout=output_channels if k == last else 0,
        ))
    return tuple(wired)


@dataclass(frozen=True)
class Space:
    """A network family with variable widths; see the module docstring."""

    name: str
    params: tuple[tuple[str, object], ...]
    input_channels: int
    output_channels: int
    input_shape: tuple[int, ...]
    input_dtype: str
    layers: tuple[LayerSpec, ...]
    templates: tuple[BlockTemplate, ...]
    attrs: tuple[tuple[str, int], ...] = ()
    resolution: int | None = None

    @property
    def num_layers(self) -> int:
        """How many variables a configuration has."""
        return len(self.layers)

    @property
    def param_dict(self) -> dict[str, object]:
        """The space's parameters, defaults filled in (what makes two spaces equal)."""
        return dict(self.params)

    @functools.cached_property
    def factors(self) -> tuple[FactorSpec, ...]:
        """One latency factor per block, over the variables the block reads."""
        return tuple(FactorSpec(t.name, t.kind, k, t.variables()) for k, t in enumerate(self.templates))

    @functools.cached_property
    def is_chain(self) -> bool:
        """Whether block k reads exactly variables k-1 and k (the chain of `widthwise-table/1`)."""
        last = self.num_layers
        if len(self.templates) != last + 1:
            return False
        for k, t in enumerate(self.templates):
            want_in, want_out = (None if k == 0 else k - 1), (None if k == last else k)
            if (t.cin_from, t.cout_from, t.hidden_from) != (want_in, want_out, None):
                return False
        return True

    @property
    def _noun(self) -> tuple[str, str]:
        """How errors name the variables: (singular, plural)."""
        return ("layer", "searchable layers") if self.is_chain else ("variable", "variables")

    def validate_widths(self, widths: Sequence[object], *, on_grid: bool = False) -> tuple[int, ...]:
        """Check a configuration: right length, positive integers (and on the grid if asked).

        A numpy row is taken as its list (a design matrix's rows are configurations too)."""
        one, many = self._noun
        if isinstance(widths, np.ndarray):
            widths = widths.tolist()
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
            raise BadWidths(f"widths must be a list of {self.num_layers} integers{self.order_hint()}")
        if len(widths) != self.num_layers:
            raise BadWidths(
                f"space {self.name} has {self.num_layers} {many}, got {len(widths)} widths{self.order_hint()}",
                expected=self.num_layers,
                got=len(widths),
            )
        out = []
        for k, w in enumerate(widths):
            layer = self.layers[k]
            where = f"{one} {k} ({layer.name})"
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or int(w) != w:
                raise BadWidths(f"width of {where} is not an integer: {w!r}", layer=k, variable=layer.name)
            if layer.options:
                self._check_option(k, int(w))
            elif w <= 0:
                raise BadWidths(f"width of {where} must be positive, got {w}", layer=k, variable=layer.name)
            if on_grid and int(w) not in layer.choices:
                raise BadWidths(
                    f"width {int(w)} of {where} is not one of its choices {list(layer.choices)}",
                    layer=k,
                    variable=layer.name,
                )
            out.append(int(w))
        return tuple(out)

    def order_hint(self) -> str:
        """For a tree space, the order the flat width list follows (a chain's is plain)."""
        if self.is_chain:
            return ""
        return ", in the order " + ", ".join(layer.name for layer in self.layers)

    def factor_op(self, f: int, values: Sequence[int]) -> BlockSpec:
        """The op of factor f, given the values of its variables (in `factors[f].variables` order)."""
        variables = self.factors[f].variables
        if len(values) != len(variables):
            names = ", ".join(self.layers[v].name for v in variables)
            raise BadWidths(
                f"factor {f} ({self.factors[f].name}) is over {len(variables)} variables ({names}), "
                f"got {len(values)} values",
                factor=f,
            )
        return self._resolve(f, dict(zip(variables, (int(v) for v in values))))

    def factor_values(self, f: int, values: Sequence[int]) -> tuple[int, ...]:
        """The values of factor f's variables, picked from a whole configuration."""
        return tuple(int(values[v]) for v in self.factors[f].variables)

    def factor_choices(self, f: int) -> tuple[tuple[int, ...], ...]:
        """The choices of each of factor f's variables, in its variable order."""
        return tuple(self.layers[v].choices for v in self.factors[f].variables)

    def _check_option(self, v: int, code: int) -> None:
        """BadWidths naming variable v unless `code` is one of its option codes."""
        layer = self.layers[v]
        if not 0 <= code < len(layer.options):
            labels = ", ".join(f"{c}={layer.label(c)}" for c in layer.choices)
            raise BadWidths(f"option {code} of {self._noun[0]} {v} ({layer.name}) is not one of its codes {labels}",
                            layer=v, variable=layer.name)

    def _resolve(self, k: int, value: Mapping[int, int]) -> BlockSpec:
        """Block k with its widths read from `value` (variable index -> width) or fixed.

        With an option variable, the option sets the kernel (of a template whose kernel is 0)
        and the hidden width (expand x `expand_base`, or x the input width); a width neither
        wired nor fixed is the hidden width; an option that does not keep the block makes it
        an `identity`."""
        t = self.templates[k]
        cin = t.cin if t.cin_from is None else value[t.cin_from]
        cout = t.cout if t.cout_from is None else value[t.cout_from]
        hidden = t.hidden if t.hidden_from is None else value[t.hidden_from]
        kernel = t.kernel
        if t.option_from is not None:
            self._check_option(t.option_from, value[t.option_from])
            opt = dict(self.layers[t.option_from].options[value[t.option_from]])
            if not opt.get("keep", 1):
                return BlockSpec(k, t.name, "identity", cin, cin, 1, 1, t.in_hw, t.out_hw, self.attrs)
            kernel = kernel or opt.get("kernel", 0)
            if "expand" in opt:
                hidden = round_width(opt["expand"] * (t.expand_base or cin))
            cin = cin or hidden
            cout = cout or hidden
        return BlockSpec(k, t.name, t.kind, cin, cout, t.stride, kernel, t.in_hw, t.out_hw, self.attrs,
                         hidden=hidden, residual_from=t.residual_from, activation=t.activation, se=t.se)

    @functools.cached_property
    def depth_runs(self) -> tuple[tuple[int, ...], ...]:
        """Runs of option variables whose blocks are alike and may be skipped (see `canonical`)."""
        runs: list[list[int]] = []
        prev: tuple | None = None
        for k, t in enumerate(self.templates):
            v = t.option_from
            if v is None or not any(not dict(o).get("keep", 1) for o in self.layers[v].options):
                prev = None
                continue
            relative = t.residual_from - k if t.residual_from >= 0 else None  # an Add of the block's own input: 0
            shape = (replace(t, name="", residual_from=0, option_from=0), relative, self.layers[v].options)
            if shape == prev and runs[-1][-1] != v:
                runs[-1].append(v)
            else:
                runs.append([v])
            prev = shape
        return tuple(tuple(r) for r in runs if len(r) > 1)

    def canonical(self, values: Sequence[int]) -> tuple[int, ...]:
        """The same network with skipped blocks moved to the end of each run of alike blocks.

        Alike blocks (same kind, geometry, wiring and options) are interchangeable, so skipping
        block m but keeping block m+1 is the network that keeps block m with block m+1's option
        and skips block m+1: depth d means the first d blocks. Identity for other spaces."""
        out = list(self.validate_widths(values))
        for run in self.depth_runs:
            options = self.layers[run[0]].options
            kept = [out[v] for v in run if dict(options[out[v]]).get("keep", 1)]
            skips = [out[v] for v in run if not dict(options[out[v]]).get("keep", 1)]
            for v, code in zip(run, kept + skips):
                out[v] = code
        return tuple(out)

    def blocks(self, widths: Sequence[int]) -> list[BlockSpec]:
        """The concrete blocks of the network with these widths, in computation order."""
        ws = self.validate_widths(widths)
        value = dict(enumerate(ws))
        return [self._resolve(k, value) for k in range(len(self.templates))]

    def _require_chain(self, what: str) -> None:
        if not self.is_chain:
            raise BadRequest(
                f"{what} is defined for chain spaces only; space {self.name} is a tree of factors "
                "(use factors and factor_op)",
                space=self.name,
            )

    def block_in_choices(self, k: int) -> tuple[int, ...]:
        """The input widths block k of a chain can see: the previous layer's choices."""
        self._require_chain("block_in_choices")
        return (self.input_channels,) if k == 0 else self.layers[k - 1].choices

    def block_out_choices(self, k: int) -> tuple[int, ...]:
        """The output widths block k of a chain can produce: its layer's choices."""
        self._require_chain("block_out_choices")
        return (self.output_channels,) if k == self.num_layers else self.layers[k].choices

    def block_at(self, k: int, cin: int, cout: int) -> BlockSpec:
        """Block k of a chain with the given input and output widths."""
        self._require_chain("block_at")
        t = self.templates[k]
        return BlockSpec(k, t.name, t.kind, cin, cout, t.stride, t.kernel, t.in_hw, t.out_hw, self.attrs)

    def smallest(self) -> tuple[int, ...]:
        """Every variable at its smallest choice."""
        return tuple(layer.choices[0] for layer in self.layers)

    def largest(self) -> tuple[int, ...]:
        """Every variable at its largest choice."""
        return tuple(layer.choices[-1] for layer in self.layers)

    def base_widths(self) -> tuple[int, ...]:
        """Every variable at its reference width (the standard network)."""
        return tuple(layer.base for layer in self.layers)

    def counts(self, widths: Sequence[int]) -> tuple[int, int]:
        """Exact (MACs, params) of the whole network with these widths: the sum over its blocks."""
        macs = params = 0
        for b in self.blocks(widths):
            m, p = block_counts(b)
            macs += m
            params += p
        return macs, params

    def to_json(self) -> dict:
        """The `space` object of a table file: layers carry their group when they have one and an
        option variable its labels; `depth_runs` (when any) lets a table reader canonicalise."""
        layers = []
        for l in self.layers:
            entry: dict = {"name": l.name, "choices": list(l.choices)}
            if l.group:
                entry["group"] = l.group
            if l.options:
                entry["labels"] = [l.label(c) for c in l.choices]
            layers.append(entry)
        out: dict = {
            "name": self.name,
            "input_channels": self.input_channels,
            "output_channels": self.output_channels,
            "layers": layers,
            "params": self.param_dict,
        }
        if self.resolution is not None:
            out["resolution"] = self.resolution
        if self.depth_runs:
            out["depth_runs"] = [
                {"variables": [self.layers[v].name for v in run],
                 "skip": [c for c in self.layers[run[0]].choices if self.layers[run[0]].label(c) == "skip"]}
                for run in self.depth_runs]
        return out
