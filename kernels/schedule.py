"""Dense kernel schedules: the hook the compile spine calls after FuseTIR, before memory planning.

`schedule_module(mod, target)` tries the rules below, in order, on every PrimFunc of the module and keeps the
first one that applies. A rule is a small class with `apply(func, target) -> PrimFunc | None`; it declines
(returns None) what it does not fit, so adding a kernel family is adding a rule. Everything a rule needs
from the target (vector lanes, tile sizes) comes from the target descriptor, never from its name.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import tvm

from .blocks import Decline
from .conv2d import Conv2dGemm
from .elementwise import Injective
from .matmul import MatmulRows
from .window import WindowReduction

log = logging.getLogger(__name__)


class Rule:
    """Wraps a rule class: turns Decline and schedule errors into None (the function stays as it was)."""

    def __init__(self, impl):
        self.impl = impl
        self.name = impl.name

    def apply(self, func, target):
        try:
            return self.impl.apply(func, target)
        except Decline as e:
            log.debug("rule %s declined: %s", self.name, e)
            return None
        except Exception as e:  # noqa: BLE001 - a schedule primitive refused (ScheduleError): decline, say why
            log.debug("rule %s declined after a schedule error: %s", self.name, str(e).splitlines()[0])
            return None


def default_rules(threads: int = 1) -> list[Rule]:
    """The rule list, most specific first."""
    return [
        Rule(Conv2dGemm(threads)),
        Rule(WindowReduction(threads)),  # depthwise convolution, max/avg pooling, global pooling
        Rule(MatmulRows(threads)),
        Rule(Injective(threads)),
    ]


def schedule_func(func, target, rules=None):
    """(scheduled PrimFunc, rule name) or (func, None) when no rule applies."""
    for rule in rules or default_rules():
        out = rule.apply(func, target)
        if out is not None:
            return out, rule.name
    return func, None


def layer_key(rule: str, func) -> str:
    """What identifies a kernel's layer shape to the tuning cache, independent of the model it came from:
    the rule that schedules it and the shapes of its buffers, e.g. `conv2d 1x32x112x112,64x32x1x1,1x64x1x1,1x64x112x112`."""
    shapes = []
    for buf in func.params:  # TVM 0.27: a PrimFunc's parameters are its buffers
        dtype = "" if str(buf.dtype) == "float32" else f":{buf.dtype}"
        shapes.append(("x".join(str(int(d)) for d in buf.shape) or "()") + dtype)
    return f"{rule} {','.join(shapes)}"


def with_tiles(target, override: dict | None):
    """target with its [tiles] updated by override: what a rule sees for one tuned kernel."""
    if not override:
        return target
    return dataclasses.replace(target, tiles={**target.tiles, **override})


def schedule_module(mod: tvm.IRModule, target, threads: int = 1, report: dict | None = None,
                    tiles_for: Callable[[str], dict | None] | None = None,
                    tiles_used: dict | None = None) -> tvm.IRModule:
    """Return mod with every PrimFunc that a rule recognises replaced by its scheduled version; others unchanged.

    target is an edgesparse.targets.Target. threads > 1 puts a parallel loop on the outer tile axis (the C
    runtime provides __TVMBackendParallelLaunch). report, when given, receives {function name: rule name or None}.
    tiles_for(layer_key(rule, func)) may return tile parameters that override the target's for that kernel
    (the tuning cache); the rule then runs again with them, and the default schedule stays if it declines.
    tiles_used, when given, receives {function name: override} for the kernels scheduled with an override.
    """
    rules = default_rules(threads)
    out = mod.clone()  # the caller's module is left as it was
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        new, rule = schedule_func(func, target, rules)
        override = tiles_for(layer_key(rule, func)) if tiles_for is not None and rule is not None else None
        if override:
            tuned = next(r for r in rules if r.name == rule).apply(func, with_tiles(target, override))
            if tuned is not None:
                new = tuned
                if tiles_used is not None:
                    tiles_used[gv.name_hint] = dict(override)
            else:
                log.warning("tuned tiles %s declined for %s; default schedule kept", override, gv.name_hint)
        if report is not None:
            report[gv.name_hint] = rule
        if rule is not None:
            out[gv] = new
    return out
