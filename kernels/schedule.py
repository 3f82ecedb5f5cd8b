"""Dense kernel schedules: the hook the compile spine calls after FuseTIR, before memory planning.

`schedule_module(mod, target)` tries the rules below, in order, on every PrimFunc of the module and keeps the
first one that applies. A rule is a small class with `apply(func, target) -> PrimFunc | None`; it declines
(returns None) what it does not fit, so adding a kernel family is adding a rule. Everything a rule needs
from the target (vector lanes, tile sizes) comes from the target descriptor, never from its name.
"""

from __future__ import annotations

import logging

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


def schedule_module(mod: tvm.IRModule, target, threads: int = 1, report: dict | None = None) -> tvm.IRModule:
    """Return mod with every PrimFunc that a rule recognises replaced by its scheduled version; others unchanged.

    target is an edgesparse.targets.Target. threads > 1 puts a parallel loop on the outer tile axis (the C
    runtime provides __TVMBackendParallelLaunch). report, when given, receives {function name: rule name or None}.
    """
    rules = default_rules(threads)
    out = mod.clone()  # the caller's module is left as it was
    for gv, func in mod.functions.items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        new, rule = schedule_func(func, target, rules)
        if report is not None:
            report[gv.name_hint] = rule
        if rule is not None:
            out[gv] = new
    return out
