"""The stages and blocks of a `widthwise-space/1` spec, walked into the space's block templates.

Blocks run in order; a block's input is the previous block's output. Its output width
(`out`, or its stage's `width`) is a variable's name or a fixed integer; blocks sharing a
variable are tied. `inverted_residual` is written as one block and becomes two templates
(`ir_expand` or `mb_expand`, then `ir_project`) or, with an option variable and a residual,
one `mb_block`, exactly as the built-in families wire them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from .block_kinds import ACTIVATIONS, BlockTemplate
from .families import same_out
from .space_model import LayerSpec
from .space_spec_read import (MAX_BLOCKS, MAX_STAGES, MAX_WIDTH, check_keys, read_int, read_kernel, read_list, read_name,
                         spec_error)

COMMON = ("kind", "name")
#: spec block kind -> the fields it takes (besides kind and name)
BLOCK_FIELDS: dict[str, tuple[str, ...]] = {
    "conv": ("kernel", "stride", "out", "activation"),
    "dwsep": ("kernel", "stride", "out"),
    "ir_dwproject": ("kernel", "stride", "out", "residual", "activation"),
    "inverted_residual": ("kernel", "stride", "out", "residual", "activation", "se", "expand", "options",
                          "expand_base"),
    "pool_fc": ("out",),
    "pool_mix_fc": ("hidden", "out", "activation"),
    "embedding": ("out",),
    "proj_dense": ("out",),
    "dense": ("out",),
}
#: spec block kind -> (the tensor it reads, the tensor it makes)
TENSORS: dict[str, tuple[str, str]] = {
    "conv": ("image", "image"), "dwsep": ("image", "image"), "ir_dwproject": ("image", "image"),
    "inverted_residual": ("image", "image"), "pool_fc": ("image", "vector"), "pool_mix_fc": ("image", "vector"),
    "embedding": ("tokens", "sequence"), "proj_dense": ("sequence", "vector"), "dense": ("vector", "vector"),
}
STAGE_KEYS = ("name", "width", "blocks")

Source = tuple[int | None, int]  # (variable index, or None and the fixed width)


@dataclass
class _Walk:
    """The state of the walk: templates so far, the current tensor and its width's source."""

    layers: Sequence[LayerSpec]
    index: Mapping[str, int]
    templates: list[BlockTemplate]
    src: Source
    hw: int
    tensor: str

    def source(self, value: object, where: str, key: str, path: str, *, options: bool = False) -> Source:
        """A width (or option) source: a variable's name, or a fixed positive integer."""
        if isinstance(value, str):
            if value not in self.index:
                raise spec_error(where, key, f"names no variable: {value!r}", path)
            v = self.index[value]
            if bool(self.layers[v].options) != options:
                want = "an option variable" if options else "a width variable"
                raise spec_error(where, key, f"must name {want}; {value!r} is not one", path)
            return v, 0
        if options:
            raise spec_error(where, key, f"must name an option variable, got {value!r}", path)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WIDTH:
            raise spec_error(where, key, f"must be a variable's name or a width from 1 to {MAX_WIDTH}, got {value!r}",
                             path)
        return None, value

    def add(self, t: BlockTemplate) -> int:
        self.templates.append(t)
        return len(self.templates) - 1


def _wired(src: Source, side: str) -> dict:
    """BlockTemplate keyword arguments wiring one side (cin, cout or hidden) to a source."""
    var, fixed = src
    return {f"{side}_from": var} if var is not None else {side: fixed}


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _names(src: Source, layers: Sequence[LayerSpec]) -> str:
    return f"variable {layers[src[0]].name!r}" if src[0] is not None else f"the fixed width {src[1]}"


def _flag(block: Mapping, key: str, where: str, path: str) -> bool:
    value = block.get(key, False)
    if not isinstance(value, bool):
        raise spec_error(where, key, f"must be true or false, got {value!r}", f"{path}.{key}")
    return value


def _activation(block: Mapping, where: str, path: str, default: str) -> str:
    value = block.get("activation", default)
    if value not in ACTIVATIONS:
        raise spec_error(where, "activation", f"must be one of {', '.join(ACTIVATIONS)}, got {value!r}",
                         f"{path}.activation")
    return str(value)


def _block(w: _Walk, block: Mapping, kind: str, name: str, out: Source, where: str, path: str) -> None:
    """Append the template(s) of one block read from the spec."""
    stride = read_int(block, "stride", where, lo=1, hi=4, default=1, path=path)
    residual = _flag(block, "residual", where, path)
    out_hw = same_out(w.hw, stride) if TENSORS[kind][1] == "image" else 1
    if residual and (w.src != out or stride != 1):
        why = (f"its stride is {stride}" if w.src == out else
               f"its input is {_names(w.src, w.layers)} and its output {_names(out, w.layers)}")
        raise spec_error(where, "residual", f"the Add needs the block's input and output widths tied and "
                                            f"stride 1, but {why}", f"{path}.residual")
    k = len(w.templates)
    cin, cout = _wired(w.src, "cin"), _wired(out, "cout")
    if kind == "conv":
        w.add(BlockTemplate(name, kind, stride, read_kernel(block, where, path), w.hw, out_hw, **cin, **cout,
                            activation=_activation(block, where, path, "relu6")))
    elif kind == "dwsep":
        w.add(BlockTemplate(name, kind, stride, read_kernel(block, where, path), w.hw, out_hw, **cin, **cout))
    elif kind == "ir_dwproject":
        w.add(BlockTemplate(name, kind, stride, read_kernel(block, where, path), w.hw, out_hw, **cin, **cout,
                            **_wired(w.src, "hidden"), residual_from=k if residual else -1,
                            activation=_activation(block, where, path, "relu6")))
    elif kind == "inverted_residual":
        _inverted_residual(w, block, name, out, stride, out_hw, residual, where, path)
    elif kind in ("pool_fc", "pool_mix_fc"):
        extra = {}
        if kind == "pool_mix_fc":
            extra = {"hidden": read_int(block, "hidden", where, lo=1, hi=MAX_WIDTH, path=path),
                     "activation": _activation(block, where, path, "hswish")}
        w.add(BlockTemplate(name, kind, in_hw=w.hw, out_hw=1, **cin, **cout, **extra))
    else:  # embedding, proj_dense, dense: the text family's chain blocks
        w.add(BlockTemplate(name, kind, **cin, **cout))
    w.hw = out_hw


def _inverted_residual(w: _Walk, block: Mapping, name: str, out: Source, stride: int, out_hw: int, residual: bool,
                       where: str, path: str) -> None:
    """An inverted residual: expand (1x1 and depthwise) then project, or one `mb_block` with options."""
    act = _activation(block, where, path, "relu6")
    se = _flag(block, "se", where, path)
    given = [key for key in ("expand", "options") if key in block]
    if len(given) != 1:
        raise spec_error(where, "expand", "give exactly one of expand (a width) or options (an option variable)",
                         path)
    k = len(w.templates)
    cin, cout = _wired(w.src, "cin"), _wired(out, "cout")
    if "expand" in block:
        for key in ("expand_base",):
            if key in block:
                raise spec_error(where, key, "applies to a block with options only", f"{path}.{key}")
        hidden = w.source(block["expand"], where, "expand", f"{path}.expand")
        kernel = read_kernel(block, where, path)
        expand_kind = "ir_expand" if (act, se) == ("relu6", False) else "mb_expand"
        w.add(BlockTemplate(f"{name}.expand", expand_kind, stride, kernel, w.hw, out_hw, **cin,
                            **_wired(hidden, "cout"), **_wired(hidden, "hidden"), activation=act, se=se))
        w.add(BlockTemplate(f"{name}.project", "ir_project", 1, 1, out_hw, out_hw, **_wired(hidden, "cin"), **cout,
                            **_wired(hidden, "hidden"), residual_from=k if residual else -1, activation=act))
        return
    if "kernel" in block:
        raise spec_error(where, "kernel", "comes from the block's options; remove it", f"{path}.kernel")
    opt, _ = w.source(block["options"], where, "options", f"{path}.options", options=True)
    options = w.layers[opt].options
    base = read_int(block, "expand_base", where, lo=1, hi=MAX_WIDTH, default=0, path=path) if "expand_base" in block \
        else 0
    if residual:
        w.add(BlockTemplate(name, "mb_block", 1, 0, w.hw, out_hw, **cin, **cout, option_from=opt, residual_from=k,
                            activation=act, se=se, expand_base=base))
        return
    if any(not dict(o).get("keep", 1) for o in options):
        raise spec_error(where, "options", f"variable {w.layers[opt].name!r} can skip the block, but only a "
                                           "residual block (input and output tied, stride 1) may be skipped",
                         f"{path}.options")
    if not base:
        raise spec_error(where, "expand_base", "a block with options and no residual needs expand_base (its hidden "
                                               "width = expand x expand_base, independent of its input width)", path)
    w.add(BlockTemplate(f"{name}.expand", "mb_expand", stride, 0, w.hw, out_hw, **cin, option_from=opt,
                        expand_base=base, activation=act, se=se))
    w.add(BlockTemplate(f"{name}.project", "ir_project", 1, 1, out_hw, out_hw, **cout, option_from=opt,
                        expand_base=base, activation=act))


def build_templates(spec: Mapping, layers: Sequence[LayerSpec], in_channels: int, in_hw: int,
                    dtype: str) -> tuple[tuple[BlockTemplate, ...], int]:
    """The templates of the spec's stages in order, and the network's (fixed) output width."""
    w = _Walk(layers, {layer.name: v for v, layer in enumerate(layers)}, [], (None, in_channels), in_hw,
              "image" if dtype == "float32" else "tokens")
    total = 0
    stage_names: set[str] = set()
    for s, stage_obj in enumerate(read_list(spec, "stages", "", cap=MAX_STAGES)):
        spath = f".stages[{s}]"
        stage = check_keys(stage_obj, STAGE_KEYS, f"stage {s + 1}", "a stage", spath)
        sname = read_name(stage, "name", f"stage {s + 1}", path=spath)
        if sname in stage_names:
            raise spec_error(f"stage {s + 1} ({sname})", "name", "is used by an earlier stage", f"{spath}.name")
        stage_names.add(sname)
        blocks = read_list(stage, "blocks", f"stage {s + 1} ({sname})", cap=MAX_BLOCKS, path=spath)
        total += len(blocks)
        if total > MAX_BLOCKS:
            raise spec_error(f"stage {s + 1} ({sname})", "blocks", f"the spec has more than {MAX_BLOCKS} blocks", spath)
        for m, block_obj in enumerate(blocks):
            bpath = f"{spath}.blocks[{m}]"
            where = f"stage {s + 1} block {m + 1}"
            kind = block_obj.get("kind") if isinstance(block_obj, Mapping) else None
            if kind not in BLOCK_FIELDS:
                raise spec_error(where, "kind", f"unknown block kind {kind!r}; known: {', '.join(BLOCK_FIELDS)}",
                                 f"{bpath}.kind")
            block = check_keys(block_obj, COMMON + BLOCK_FIELDS[kind], where, f"{_a(kind)} {kind} block", bpath)
            name = read_name(block, "name", where, path=bpath, default=f"{sname}.block{m + 1}")
            where = f"stage {s + 1} block {m + 1} ({name})"
            reads, makes = TENSORS[kind]
            if reads != w.tensor:
                raise spec_error(where, "kind", f"{_a(kind)} {kind} block reads {_a(reads)} {reads} tensor, but "
                                                f"{'the input' if not w.templates else 'the previous block'} "
                                                f"makes {_a(w.tensor)} {w.tensor} tensor", f"{bpath}.kind")
            if "out" not in block and "width" not in stage:
                raise spec_error(where, "out", "is missing (and the stage has no width)", f"{bpath}.out")
            out = w.source(block.get("out", stage.get("width")), where, "out",
                           f"{bpath}.out" if "out" in block else f"{spath}.width")
            _block(w, block, kind, name, out, where, bpath)
            w.src, w.tensor = out, makes
    if w.tensor != "vector":
        raise spec_error("the last block", "kind", f"the network must end in a vector (pool_fc, pool_mix_fc, dense, "
                                                   f"proj_dense), but it ends in {_a(w.tensor)} {w.tensor} tensor", ".stages")
    if w.src[0] is not None:
        raise spec_error("the last block", "out", f"must be a fixed integer (the network's outputs), got variable "
                                                  f"{layers[w.src[0]].name!r}", ".stages")
    return tuple(w.templates), w.src[1]
