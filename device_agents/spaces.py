"""Search spaces: the one definition of each network family, shared by builder, fit and search.

A space is data. Its network is a chain of L searchable layers, whose widths vary, and
L+1 blocks: block 0 maps the fixed input channels to layer 0's width, block k maps layer
k-1's width to layer k's, and block L maps layer L-1's width to the fixed output. Every
block has a `kind`; builders (ONNX, TFLite) and the exact MAC/parameter counters are
registries keyed by that kind, so adding a family never touches the solver or the search.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence, TypeVar

from .errors import BadRequest, BadWidths, UnknownSpace


@dataclass(frozen=True)
class LayerSpec:
    """A searchable layer: its name, its reference width and its ordered width choices."""

    name: str
    base: int
    choices: tuple[int, ...]


@dataclass(frozen=True)
class BlockTemplate:
    """A block of the chain before widths are chosen: kind and fixed geometry."""

    name: str
    kind: str
    stride: int = 1
    kernel: int = 1
    in_hw: int = 1
    out_hw: int = 1


@dataclass(frozen=True)
class BlockSpec:
    """A block with its widths resolved: everything a builder or a counter needs."""

    index: int
    name: str
    kind: str
    cin: int
    cout: int
    stride: int
    kernel: int
    in_hw: int
    out_hw: int
    attrs: tuple[tuple[str, int], ...] = ()

    def attr(self, key: str) -> int:
        """A fixed integer attribute of the space (e.g. `vocab`, `dim`, `tokens`)."""
        return dict(self.attrs)[key]


@dataclass(frozen=True)
class Space:
    """A network family with variable widths; see the module docstring for the chain."""

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
        return len(self.layers)

    @property
    def param_dict(self) -> dict[str, object]:
        """The space's parameters, defaults filled in (what makes two spaces equal)."""
        return dict(self.params)

    def validate_widths(self, widths: Sequence[object], *, on_grid: bool = False) -> tuple[int, ...]:
        """Check a width list: right length, positive integers (and on the grid if asked)."""
        if isinstance(widths, (str, bytes)) or not isinstance(widths, Sequence):
            raise BadWidths(f"widths must be a list of {self.num_layers} integers")
        if len(widths) != self.num_layers:
            raise BadWidths(
                f"space {self.name} has {self.num_layers} searchable layers, got {len(widths)} widths",
                expected=self.num_layers,
                got=len(widths),
            )
        out = []
        for k, w in enumerate(widths):
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or int(w) != w:
                raise BadWidths(f"width of layer {k} ({self.layers[k].name}) is not an integer: {w!r}", layer=k)
            if w <= 0:
                raise BadWidths(f"width of layer {k} ({self.layers[k].name}) must be positive, got {w}", layer=k)
            if on_grid and int(w) not in self.layers[k].choices:
                raise BadWidths(
                    f"width {int(w)} of layer {k} ({self.layers[k].name}) is not one of its choices "
                    f"{list(self.layers[k].choices)}",
                    layer=k,
                )
            out.append(int(w))
        return tuple(out)

    def blocks(self, widths: Sequence[int]) -> list[BlockSpec]:
        """The L+1 concrete blocks of the network with these widths."""
        ws = self.validate_widths(widths)
        chain = (self.input_channels, *ws, self.output_channels)
        return [
            BlockSpec(
                index=k,
                name=t.name,
                kind=t.kind,
                cin=chain[k],
                cout=chain[k + 1],
                stride=t.stride,
                kernel=t.kernel,
                in_hw=t.in_hw,
                out_hw=t.out_hw,
                attrs=self.attrs,
            )
            for k, t in enumerate(self.templates)
        ]

    def block_in_choices(self, k: int) -> tuple[int, ...]:
        """The input widths block k can see: the previous layer's choices."""
        return (self.input_channels,) if k == 0 else self.layers[k - 1].choices

    def block_out_choices(self, k: int) -> tuple[int, ...]:
        """The output widths block k can produce: its layer's choices."""
        return (self.output_channels,) if k == self.num_layers else self.layers[k].choices

    def block_at(self, k: int, cin: int, cout: int) -> BlockSpec:
        """Block k with the given input and output widths."""
        t = self.templates[k]
        return BlockSpec(k, t.name, t.kind, cin, cout, t.stride, t.kernel, t.in_hw, t.out_hw, self.attrs)

    def smallest(self) -> tuple[int, ...]:
        return tuple(layer.choices[0] for layer in self.layers)

    def largest(self) -> tuple[int, ...]:
        return tuple(layer.choices[-1] for layer in self.layers)

    def base_widths(self) -> tuple[int, ...]:
        return tuple(layer.base for layer in self.layers)

    def counts(self, widths: Sequence[int]) -> tuple[int, int]:
        """Exact (MACs, params) of the whole network with these widths."""
        macs = params = 0
        for b in self.blocks(widths):
            m, p = block_counts(b)
            macs += m
            params += p
        return macs, params

    def to_json(self) -> dict:
        """The `space` object of a `widthwise-table/1` file."""
        out: dict = {
            "name": self.name,
            "input_channels": self.input_channels,
            "output_channels": self.output_channels,
            "layers": [{"name": l.name, "choices": list(l.choices)} for l in self.layers],
            "params": self.param_dict,
        }
        if self.resolution is not None:
            out["resolution"] = self.resolution
        return out


# --- registries keyed by block kind --------------------------------------------------------

F = TypeVar("F", bound=Callable[..., object])


def kind_registry(table: dict[str, F]) -> Callable[[str], Callable[[F], F]]:
    """`register(kind)` decorators filing functions in `table`: every per-block-kind registry's."""

    def register(kind: str) -> Callable[[F], F]:
        def deco(fn: F) -> F:
            table[kind] = fn
            return fn

        return deco

    return register


# --- exact MAC and parameter counts, one handler per block kind -----------------------

BlockCounter = Callable[[BlockSpec], tuple[int, int]]
BLOCK_COUNTERS: dict[str, BlockCounter] = {}
register_counter = kind_registry(BLOCK_COUNTERS)  # @register_counter("kind"): the (MACs, params) counter of a kind


def block_counts(block: BlockSpec) -> tuple[int, int]:
    """Exact (MACs, params) of one block. MACs count convolution and matrix products only."""
    counter = BLOCK_COUNTERS.get(block.kind)
    if counter is None:
        raise UnknownSpace(f"no counter for block kind {block.kind!r}", kind=block.kind)
    return counter(block)


@register_counter("conv")
def _count_conv(b: BlockSpec) -> tuple[int, int]:
    # k×k convolution with bias (batch norm folded), then ReLU6.
    weights = b.kernel * b.kernel * b.cin * b.cout
    return b.out_hw * b.out_hw * weights, weights + b.cout


@register_counter("dwsep")
def _count_dwsep(b: BlockSpec) -> tuple[int, int]:
    # depthwise k×k on cin channels (+bias, ReLU6), then pointwise cin→cout (+bias, ReLU6).
    dw = b.kernel * b.kernel * b.cin
    pw = b.cin * b.cout
    return b.out_hw * b.out_hw * (dw + pw), dw + b.cin + pw + b.cout


@register_counter("pool_fc")
def _count_pool_fc(b: BlockSpec) -> tuple[int, int]:
    # global average pooling, then a fully connected cin→cout with bias (logits).
    return b.cin * b.cout, b.cin * b.cout + b.cout


@register_counter("embedding")
def _count_embedding(b: BlockSpec) -> tuple[int, int]:
    # a vocab×cout lookup table; a gather does no multiply-accumulate.
    return 0, b.attr("vocab") * b.cout


@register_counter("proj_dense")
def _count_proj_dense(b: BlockSpec) -> tuple[int, int]:
    # per-token projection cin→dim (no bias), mean over tokens, dense dim→cout (+bias, ReLU).
    dim, tokens = b.attr("dim"), b.attr("tokens")
    return tokens * b.cin * dim + dim * b.cout, b.cin * dim + dim * b.cout + b.cout


@register_counter("dense")
def _count_dense(b: BlockSpec) -> tuple[int, int]:
    # dense cin→cout with bias (logits).
    return b.cin * b.cout, b.cin * b.cout + b.cout


# --- the families ----------------------------------------------------------------------

#: (kind, stride, base width) of MobileNet-V1's 14 searchable layers (stem + 13 dw-separable).
MOBILENET_V1_LAYERS: tuple[tuple[str, int, int], ...] = (
    ("conv", 2, 32),
    ("dwsep", 1, 64),
    ("dwsep", 2, 128),
    ("dwsep", 1, 128),
    ("dwsep", 2, 256),
    ("dwsep", 1, 256),
    ("dwsep", 2, 512),
    ("dwsep", 1, 512),
    ("dwsep", 1, 512),
    ("dwsep", 1, 512),
    ("dwsep", 1, 512),
    ("dwsep", 1, 512),
    ("dwsep", 2, 1024),
    ("dwsep", 1, 1024),
)


def width_grid(base: int, levels: int, lo: float = 0.2, hi: float = 1.5, multiple: int = 8) -> tuple[int, ...]:
    """`base × linspace(lo, hi, levels)` rounded to multiples of `multiple` (≥ it), de-duplicated."""
    if levels < 1:
        raise BadRequest(f"levels must be at least 1, got {levels}")
    if levels == 1:
        mults = [hi]
    else:
        mults = [lo + (hi - lo) * i / (levels - 1) for i in range(levels)]
    out: list[int] = []
    for m in mults:
        w = max(multiple, int(math.floor(base * m / multiple + 0.5)) * multiple)
        if w not in out:
            out.append(w)
    return tuple(out)


def _same_out(hw: int, stride: int) -> int:
    return -(-hw // stride)


def mobilenet_v1(resolution: int = 224, levels: int = 14) -> Space:
    """MobileNet-V1 with 14 searchable widths, the family of the method's paper."""
    if resolution < 8:
        raise BadRequest(f"resolution must be at least 8, got {resolution}")
    layers, templates = [], []
    hw = resolution
    for k, (kind, stride, base) in enumerate(MOBILENET_V1_LAYERS):
        name = "conv0" if kind == "conv" else f"dwsep{k}"
        out_hw = _same_out(hw, stride)
        layers.append(LayerSpec(name, base, width_grid(base, levels)))
        templates.append(BlockTemplate(name, kind, stride=stride, kernel=3, in_hw=hw, out_hw=out_hw))
        hw = out_hw
    templates.append(BlockTemplate("classifier", "pool_fc", in_hw=hw, out_hw=1))
    return Space(
        name="mobilenet_v1",
        params=(("resolution", resolution), ("levels", levels)),
        input_channels=3,
        output_channels=1000,
        input_shape=(1, 3, resolution, resolution),
        input_dtype="float32",
        layers=tuple(layers),
        templates=tuple(templates),
        resolution=resolution,
    )


TEXT_RANKS = (10, 20, 30, 40, 50, 75, 100, 150, 200, 300)
TEXT_HIDDEN = (64, 128, 192, 256, 384, 512)


def text_lowrank(
    vocab: int = 100_000,
    dim: int = 300,
    tokens: int = 32,
    classes: int = 20,
    ranks: Sequence[int] = TEXT_RANKS,
    hidden: Sequence[int] = TEXT_HIDDEN,
) -> Space:
    """A text classifier whose embedding is factorised: the rank r and hidden width h vary."""
    for key, val in (("vocab", vocab), ("dim", dim), ("tokens", tokens), ("classes", classes)):
        if val < 1:
            raise BadRequest(f"{key} must be positive, got {val}")
    for key, seq in (("ranks", ranks), ("hidden", hidden)):
        if not seq or any(int(v) != v or v < 1 for v in seq) or list(seq) != sorted(set(seq)):
            raise BadRequest(f"{key} must be a strictly increasing list of positive integers, got {list(seq)}")
    attrs = (("vocab", vocab), ("dim", dim), ("tokens", tokens))
    return Space(
        name="text_lowrank",
        params=(
            ("vocab", vocab),
            ("dim", dim),
            ("tokens", tokens),
            ("classes", classes),
            ("ranks", list(ranks)),
            ("hidden", list(hidden)),
        ),
        input_channels=vocab,
        output_channels=classes,
        input_shape=(1, tokens),
        input_dtype="int64",
        layers=(
            LayerSpec("rank", dim, tuple(int(r) for r in ranks)),
            LayerSpec("hidden", 256, tuple(int(h) for h in hidden)),
        ),
        templates=(
            BlockTemplate("embedding", "embedding"),
            BlockTemplate("projection", "proj_dense"),
            BlockTemplate("classifier", "dense"),
        ),
        attrs=attrs,
    )


@dataclass(frozen=True)
class SpaceFactory:
    """A family's constructor with its parameter names and their types, for validation."""

    build: Callable[..., Space]
    param_types: Mapping[str, type] = field(default_factory=dict)
    doc: str = ""


SPACES: dict[str, SpaceFactory] = {
    "mobilenet_v1": SpaceFactory(mobilenet_v1, {"resolution": int, "levels": int}, "MobileNet-V1, 14 widths"),
    "text_lowrank": SpaceFactory(
        text_lowrank,
        {"vocab": int, "dim": int, "tokens": int, "classes": int, "ranks": list, "hidden": list},
        "factorised-embedding text classifier: rank and hidden width",
    ),
}


def make_space(name: str, params: Mapping[str, object] | None = None) -> Space:
    """Build a space by name; an unknown name or parameter is an error naming it."""
    factory = SPACES.get(name)
    if factory is None:
        raise UnknownSpace(f"unknown space {name!r}; known: {', '.join(sorted(SPACES))}", space=name)
    kwargs: dict[str, object] = {}
    for key, value in (params or {}).items():
        expected = factory.param_types.get(key)
        if expected is None:
            raise BadRequest(
                f"space {name} has no parameter {key!r}; it takes {', '.join(factory.param_types)}", param=key
            )
        if expected is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise BadRequest(f"space parameter {key} must be an integer, got {value!r}", param=key)
        if expected is list and not isinstance(value, (list, tuple)):
            raise BadRequest(f"space parameter {key} must be a list, got {value!r}", param=key)
        kwargs[key] = value
    return factory.build(**kwargs)
