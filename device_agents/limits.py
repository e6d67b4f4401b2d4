"""Caps on the work one request may ask of the agent, checked before anything is built.

A board shared on a lab network must not be run out of memory, or held behind the
execution lock for hours, by one request. Every cap is refused with LimitExceeded naming
the cap (`field`), its value (`limit`) and the value asked for (`value`).

Defaults fit a 1 GiB board and admit everything the project itself asks for: MobileNet-V1
1.5x at 224 (1.26 GMACs, 8.7 M parameters, about 110 MB estimated), MobileNet-V2 with every
variable at 1.5x at 224 (0.66 GMACs, 6.8 M parameters, about 92 MB estimated), OFA's
MobileNet-V3 at its largest at 224 (every block k7e6, widths 1.5x: 1.10 GMACs, 12.9 M
parameters, about 163 MB estimated) and the text space at its README figures (vocabulary
100,000, dimension 300, 32 tokens, rank 300: 30.3 M parameters, about 360 MB estimated).
A space spec (device_agents.space_spec) is held to the same caps at its largest
configuration before anything is built.

Memory is estimated as `WEIGHT_COPIES` x 4 bytes per parameter (the weights drawn by the
builder, the serialised model the agent keeps in its cache, and the runtime's own copy,
which coexist while a session loads; int8 networks are built from float32 weights too)
plus 4 bytes per element of the largest set of tensors one block holds live at once (its
input, intermediates and output; see ACTIVATIONS). Runtime arenas and the interpreter
itself are not counted: the default leaves half of a 1 GiB board for them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping, Sequence

from .errors import LimitExceeded, UnknownSpace
from .space_spec_read import check_spec_size

WEIGHT_COPIES = 3
#: parameters of one network: 1 GiB of float32 weights, beyond which a board runs out of memory building it
MAX_PARAMS = 1 << 28
BYTES_PER_ELEMENT = 4
#: the request's own default timing.max_total_s, when it is within max_request_s
DEFAULT_MAX_TOTAL_S = 120.0


@dataclass(frozen=True)
class Limits:
    """The agent's caps; `agent serve` sets the first three, the rest are fixed defaults."""

    max_macs: int = 4_000_000_000
    max_memory_bytes: int = 512 * 1024 * 1024
    max_request_s: float = 300.0
    max_resolution: int = 1024
    max_levels: int = 256  # a width grid has at most a few hundred distinct values
    max_tokens: int = 8192
    max_warmup: int = 1000
    max_repeat: int = 10_000
    max_number: int = 1_000_000
    max_min_repeat_ms: float = 10_000.0
    max_threads: int = 64

    @property
    def max_input_bytes(self) -> int:
        """Total bytes of the random inputs fed to a sent model: a quarter of the memory cap."""
        return self.max_memory_bytes // 4


DEFAULT_LIMITS = Limits()
_current = DEFAULT_LIMITS

#: flag of `agent serve` that changes a cap, named in refusals
FLAGS = {"macs": "--max-macs", "memory": "--max-memory-mb", "timing.max_total_s": "--max-request-seconds"}


def configure(limits: Limits) -> None:
    """Set the caps every later request is checked against."""
    global _current
    _current = limits


def current() -> Limits:
    """The caps in force."""
    return _current


def refuse(field: str, what: str, value: int | float, limit: int | float, unit: str = "") -> LimitExceeded:
    """The LimitExceeded of one cap, its message naming the cap and the value asked for."""
    flag = FLAGS.get(field)
    how = f" (agent serve {flag})" if flag else ""
    return LimitExceeded(
        f"{what} is {value:,}{unit}, above this agent's cap of {limit:,}{unit}{how}", field=field, limit=limit,
        value=value,
    )


def _cap(field: str, value: object, limit: int | float) -> None:
    """Refuse a number above its cap; values of the wrong type are left to the field's own check."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > limit:
        raise refuse(field, field, value, limit)


def check_space_params(params: Mapping[str, object], where: str = "spec") -> None:
    """Refuse space parameters above their caps before the space is made (a huge `levels` is slow to
    make); a space spec (params {"spec": ...}) is held to its size caps (device_agents.space_spec)."""
    if "spec" in params:
        check_spec_size(params["spec"])
    limits = _current
    caps = {"resolution": limits.max_resolution, "levels": limits.max_levels, "tokens": limits.max_tokens}
    for key, limit in caps.items():
        if key in params:
            _cap(f"{where}.params.{key}", params[key], limit)


# --- network size --------------------------------------------------------------------------

#: block kind -> elements of the tensors the block holds live at once (input, intermediates, output)
ACTIVATIONS: dict[str, Callable[..., int]] = {
    "conv": lambda b: b.cin * b.in_hw ** 2 + b.cout * b.out_hw ** 2,
    "dwsep": lambda b: b.cin * b.in_hw ** 2 + (b.cin + b.cout) * b.out_hw ** 2,
    "pool_fc": lambda b: b.cin * b.in_hw ** 2 + b.cin + b.cout,
    # inverted residuals: a residual block's input stays live until its Add, which writes a third tensor
    "ir_dwproject": lambda b: b.cin * b.in_hw ** 2 + (b.cin + b.cout * (2 if b.residual else 1)) * b.out_hw ** 2,
    "ir_expand": lambda b: (b.cin + b.hidden) * b.in_hw ** 2 + b.hidden * b.out_hw ** 2,
    "ir_project": lambda b: (b.cin + b.cout * (3 if b.residual else 1)) * b.out_hw ** 2,
    # the expansion, its depthwise output and (with SE) the gated copy; mb_block keeps its input for the Add
    "mb_expand": lambda b: (b.cin + b.hidden) * b.in_hw ** 2 + b.hidden * (2 if b.se else 1) * b.out_hw ** 2,
    "mb_block": lambda b: (2 * b.cin + (3 if b.se else 2) * b.hidden + b.cout) * b.out_hw ** 2,
    "identity": lambda b: b.cin * b.in_hw ** 2,
    "pool_mix_fc": lambda b: b.cin * b.in_hw ** 2 + b.cin + b.hidden + b.cout,
    # int64 token ids count two elements each
    "embedding": lambda b: 2 * b.attr("tokens") + b.attr("tokens") * b.cout,
    "proj_dense": lambda b: b.attr("tokens") * (b.cin + b.attr("dim")) + b.attr("dim") + b.cout,
    "dense": lambda b: b.cin + b.cout,
}


def peak_activation_elems(space: object, widths: Sequence[int]) -> int:
    """The most activation elements one block of the network holds live at once."""
    return peak_block_elems(space.blocks(widths))  # type: ignore[attr-defined]


def peak_block_elems(blocks: Iterable[object]) -> int:
    """The most activation elements one of these blocks holds live at once."""
    peak = 0
    for block in blocks:
        estimate = ACTIVATIONS.get(block.kind)  # type: ignore[attr-defined]
        if estimate is None:
            raise UnknownSpace(f"no activation estimate for block kind {block.kind!r}")  # type: ignore[attr-defined]
        peak = max(peak, estimate(block))
    return peak


def estimate_memory_bytes(params: int, activation_elems: int) -> int:
    """Estimated peak memory of building, loading and running a network (module docstring)."""
    return WEIGHT_COPIES * BYTES_PER_ELEMENT * params + BYTES_PER_ELEMENT * activation_elems


def check_network(space: object, widths: Sequence[int], macs: int, params: int) -> None:
    """Refuse a network whose MACs or estimated memory are above the caps."""
    check_blocks(space.blocks(widths), macs, params)  # type: ignore[attr-defined]


def check_blocks(blocks: Sequence[object], macs: int, params: int) -> None:
    """Refuse a network of these blocks (a whole one, or a run timed alone) whose MACs or
    estimated memory are above the caps."""
    limits = _current
    if macs > limits.max_macs:
        raise refuse("macs", "the network's multiply-accumulate count", macs, limits.max_macs)
    memory = estimate_memory_bytes(params, peak_block_elems(blocks))
    if memory > limits.max_memory_bytes:
        raise refuse("memory", "the network's estimated peak memory", memory, limits.max_memory_bytes, " bytes")


# --- timing --------------------------------------------------------------------------------


def check_timing(obj: object) -> Mapping[str, object] | None:
    """Refuse timing fields above their caps; returns `obj` with max_total_s defaulted within the cap."""
    limits = _current
    if obj is None:
        obj = {}
    if not isinstance(obj, Mapping):
        return obj  # type: ignore[return-value]  (TimingSettings names the type error)
    caps: dict[str, int | float] = {
        "warmup": limits.max_warmup, "repeat": limits.max_repeat, "number": limits.max_number,
        "min_repeat_ms": limits.max_min_repeat_ms, "threads": limits.max_threads,
        "max_total_s": limits.max_request_s,
    }
    for key, limit in caps.items():
        _cap(f"timing.{key}", obj.get(key), limit)
    if "max_total_s" not in obj:
        obj = {**obj, "max_total_s": min(DEFAULT_MAX_TOTAL_S, limits.max_request_s)}
    return obj


def check_inputs(inputs: Sequence[object]) -> None:
    """Refuse a loaded model whose inputs would take more than the input cap to feed."""
    limit = _current.max_input_bytes
    total = 0
    for spec in inputs:
        count = 1
        for dim in spec.shape:  # type: ignore[attr-defined]
            count *= max(int(dim), 1)
        total += count * _itemsize(str(spec.dtype))  # type: ignore[attr-defined]
    if total > limit:
        raise refuse("inputs", "the model's inputs", total, limit, " bytes")


def _itemsize(dtype: str) -> int:
    digits = "".join(ch for ch in dtype if ch.isdigit())
    return max(int(digits) // 8, 1) if digits else 1


def with_overrides(base: Limits = DEFAULT_LIMITS, **caps: object) -> Limits:
    """`base` with the caps that are not None replaced."""
    return replace(base, **{k: v for k, v in caps.items() if v is not None})
