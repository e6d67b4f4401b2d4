"""What a builder makes a model of: a list of blocks and the tensors fed to the first of them.

The whole network of a configuration is one `Network`; so is a run of its blocks timed
alone (`isolated_network`), the way isolated-block latency lookup tables are built: the
blocks' own input tensor, of the shape and width the real network feeds them, is the
model input, and a residual Add whose skip tensor comes from a block outside the run reads
it from an extra input of its own shape. Shapes are NCHW for images (the TFLite builder
turns 4-D shapes into NHWC).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from .block_kinds import BlockSpec
from .errors import BadRequest, UnknownSpace
from .space_model import Space

#: the name of a network's main input, and of the input carrying block j's input to a residual Add
INPUT_NAME = "input"


def skip_input_name(block: int) -> str:
    """The input that carries block `block`'s input when that block is outside an isolated run."""
    return f"skip{block}"


def _image_in(b: BlockSpec) -> tuple[int, ...]:
    return (1, b.cin, b.in_hw, b.in_hw)


def _image_out(b: BlockSpec) -> tuple[int, ...]:
    return (1, b.cout, b.out_hw, b.out_hw)


#: block kind -> (input shape, output shape) of the block alone, as the whole network feeds and reads it
BLOCK_SHAPES: dict[str, tuple[Callable[[BlockSpec], tuple[int, ...]], Callable[[BlockSpec], tuple[int, ...]]]] = {
    "conv": (_image_in, _image_out),
    "dwsep": (_image_in, _image_out),
    "ir_dwproject": (_image_in, _image_out),
    "ir_expand": (_image_in, _image_out),  # cout is the hidden width
    "ir_project": (_image_in, _image_out),  # cin is the hidden width
    "mb_expand": (_image_in, _image_out),  # cout is the hidden width
    "mb_block": (_image_in, _image_out),
    "identity": (_image_in, _image_out),  # cin == cout, in_hw == out_hw
    "pool_fc": (_image_in, lambda b: (1, b.cout)),  # the feature map in; pooling is part of the block
    "pool_mix_fc": (_image_in, lambda b: (1, b.cout)),
    "embedding": (lambda b: (1, b.attr("tokens")), lambda b: (1, b.attr("tokens"), b.cout)),
    "proj_dense": (lambda b: (1, b.attr("tokens"), b.cin), lambda b: (1, b.cout)),
    "dense": (lambda b: (1, b.cin), lambda b: (1, b.cout)),
}
#: block kinds whose input is integer token ids
INTEGER_INPUT_KINDS = ("embedding",)


def block_shapes(b: BlockSpec) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input shape, output shape) of block `b` alone."""
    shapes = BLOCK_SHAPES.get(b.kind)
    if shapes is None:
        raise UnknownSpace(f"no input/output shape for block kind {b.kind!r}", kind=b.kind)
    return shapes[0](b), shapes[1](b)


@dataclass(frozen=True)
class Network:
    """Blocks in computation order and what they are fed: a model for a builder to make.

    `skips` lists (block index, shape) of the residual sources outside `blocks`, each fed as
    input `skip_input_name(index)`; `int_high` bounds the token ids of an integer input.
    """

    name: str
    blocks: tuple[BlockSpec, ...]
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    skips: tuple[tuple[int, tuple[int, ...]], ...] = ()
    int_high: int = 1

    @property
    def first(self) -> int:
        """The index, in the whole network, of the first block."""
        return self.blocks[0].index


def whole_network(space: Space, widths: Sequence[int]) -> Network:
    """The network of `space` with these widths, fed the space's input."""
    return Network(
        name=space.name,
        blocks=tuple(space.blocks(widths)),
        input_shape=tuple(space.input_shape),
        input_dtype=space.input_dtype,
        output_shape=(1, space.output_channels),
        int_high=int(dict(space.attrs).get("vocab", 1)),
    )


def check_block_range(space: Space, first: object, count: object = 1) -> tuple[int, int]:
    """Validate a run of blocks (`block`, `block_count` of a request); (first, count) or BadRequest naming the field."""
    n = len(space.templates)
    if isinstance(first, bool) or not isinstance(first, int) or not 0 <= first < n:
        raise BadRequest(
            f"block must be the index of a block of space {space.name}, 0 to {n - 1} "
            f"({space.templates[0].name} to {space.templates[-1].name}), got {first!r}",
            field="block", blocks=n,
        )
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= n - first:
        raise BadRequest(
            f"block_count must be an integer from 1 to {n - first} (the blocks from {first} to the last), got {count!r}",
            field="block_count", blocks=n,
        )
    return first, count


def isolated_network(space: Space, widths: Sequence[int], first: int, count: int = 1) -> Network:
    """Blocks first .. first+count-1 of the network with these widths, alone (module docstring)."""
    first, count = check_block_range(space, first, count)
    blocks = tuple(space.blocks(widths)[first : first + count])
    input_shape, _ = block_shapes(blocks[0])
    _, output_shape = block_shapes(blocks[-1])
    skips = []
    for b in blocks:
        if b.residual and b.residual_from < first:
            skips.append((b.residual_from, block_shapes(b)[1]))  # the Add's operands share one shape
    names = blocks[0].name if count == 1 else f"{blocks[0].name}..{blocks[-1].name}"
    return Network(
        name=f"{space.name} {names}",
        blocks=blocks,
        input_shape=input_shape,
        input_dtype="int64" if blocks[0].kind in INTEGER_INPUT_KINDS else "float32",
        output_shape=output_shape,
        skips=tuple(skips),
        int_high=int(dict(space.attrs).get("vocab", 1)),
    )
