"""Block analysis shared by the dense schedule rules: find a PrimFunc's reduction, inline what surrounds it.

A fused PrimFunc from Relax's FuseTIR is a list of blocks under the root block: producers (padding),
at most one reduction (the convolution, matmul or pooling), and an epilogue chain of elementwise blocks
(bias add, ReLU/Clip, residual add, HardSwish...). The rules never look at block names: they look at
iterator kinds (spatial/reduction) and at which block iterators index which buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import tvm
from tvm import s_tir

SPATIAL = 0  # IterVar.iter_type of a data-parallel block iterator
REDUCE = 2  # IterVar.iter_type of a commutative-reduction block iterator


class Decline(Exception):
    """Raised inside a rule when the function does not fit it; the rule then returns None."""


def require(cond: bool, why: str = "") -> None:
    if not cond:
        raise Decline(why)


@dataclass
class Access:
    buffer: object  # the buffer (a tvm Var-like object with .shape)
    indices: list  # PrimExpr per dimension (region minimums)

    def is_plain(self, vars_) -> bool:
        """True when index i is exactly block iterator vars_[i] for every dimension."""
        return len(self.indices) == len(vars_) and all(
            v is not None and _same_var(e, v) for e, v in zip(self.indices, vars_)
        )


def _same_var(expr, var) -> bool:
    return isinstance(expr, tvm.tirx.Var) and expr.same_as(var)


def linear_coeffs(expr, vars_) -> list[int] | None:
    """Integer coefficients of expr in vars_ (plus the constant last), or None when not affine."""
    coeffs = tvm.sym.detect_linear_equation(expr, list(vars_))
    if len(coeffs) == 0:
        return None
    out = []
    for c in coeffs:
        if not isinstance(c, tvm.tirx.IntImm):
            return None
        out.append(int(c))
    return out


def iter_kinds(sch: s_tir.Schedule, block) -> str:
    kinds = []
    for iv in sch.get(block).iter_vars:
        kinds.append({SPATIAL: "S", REDUCE: "R"}.get(int(iv.iter_type), "O"))
    return "".join(kinds)


def iter_vars(sch: s_tir.Schedule, block) -> list:
    return [iv.var for iv in sch.get(block).iter_vars]


def iter_extents(sch: s_tir.Schedule, block) -> list[int]:
    return [int(iv.dom.extent) for iv in sch.get(block).iter_vars]


def reads(sch: s_tir.Schedule, block) -> list[Access]:
    """The block's reads other than its own output (the accumulator of a reduction)."""
    blk = sch.get(block)
    outs = [w.source for w in blk.writes]
    found = []
    for r in blk.reads:
        if any(r.source.same_as(o) for o in outs):
            continue
        found.append(Access(r.source, [rg.min for rg in r.region]))
    return found


def read_index(sch: s_tir.Schedule, block, buffer) -> int:
    """Position of buffer among the block's read regions (what cache_read/reindex/transform_layout take)."""
    for i, r in enumerate(sch.get(block).reads):
        if r.source.same_as(buffer):
            return i
    raise Decline("buffer not read by block")


def write_shape(sch: s_tir.Schedule, block) -> list[int]:
    return [int(s) for s in sch.get(block).writes[0].source.shape]


def root_children(sch: s_tir.Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


@dataclass
class ReductionParts:
    """A PrimFunc split around its single reduction block."""

    sch: s_tir.Schedule
    main: object  # SBlockRV of the reduction
    pre: list  # SBlockRVs before it (padding and other producers)
    post: list  # SBlockRVs after it (the epilogue chain)


def split_around_reduction(func) -> ReductionParts:
    sch = s_tir.Schedule(func)
    children = root_children(sch)
    red = [i for i, b in enumerate(children) if "R" in iter_kinds(sch, b)]
    require(len(red) == 1, "needs exactly one reduction block")
    i = red[0]
    return ReductionParts(sch, children[i], children[:i], children[i + 1 :])


def inline_epilogue(parts: ReductionParts) -> object:
    """Fold the epilogue chain into one elementwise block that reads the reduction's output.

    Every block after the reduction but the last is inlined into its consumers; the last one stays and is
    later placed under the reduction's tile loop. With no epilogue, a copy block is made (cache_write) so
    that every rule has the same shape: reduction into a tile buffer, then one block writes the output.
    """
    sch = parts.sch
    if not parts.post:
        return sch.cache_write(parts.main, 0, "global")
    for b in parts.post[:-1]:
        try:
            sch.compute_inline(b)
        except Exception as e:  # noqa: BLE001 - tvm raises ScheduleError subclasses of TVMError
            raise Decline(f"epilogue block not inlinable: {e}") from e
    epi = parts.post[-1]
    require("R" not in iter_kinds(sch, epi), "epilogue is a reduction")
    return epi


def vectorize_inner(sch: s_tir.Schedule, loop, extent: int, lanes: int) -> None:
    """Vectorize a loop by whole vectors of lanes; leave it alone when lanes does not divide it."""
    if extent % lanes == 0 and extent > lanes:
        _, inner = sch.split(loop, [None, lanes])
        sch.vectorize(inner)
    elif extent == lanes or (extent <= lanes and extent & (extent - 1) == 0 and extent >= 4):
        sch.vectorize(loop)


def loop_extent(sch: s_tir.Schedule, loop) -> int:
    return int(sch.get(loop).extent)
