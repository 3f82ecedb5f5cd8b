"""The rewriting both template passes share (sparsify.py, dense_templates.py): each matched chain - an operator,
then the bias, residual and clamps folded into it (epilogue.py) - becomes one ``call_tir`` of a template kernel, bound to
the chain's last variable; the chain's other bindings are dropped."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.expr_functor import PyExprMutator


class ChainRewriter(PyExprMutator):
    """Subclasses (decorated with ``@mutator``) say which chains a function has (``matches``) and what replaces
    one (``replacement``); ``rewrite`` applies them to every Relax function of the module."""

    def __init__(self, mod: tvm.IRModule):
        super().__init__(mod)
        self.mod_ = mod
        self.ends: dict = {}  # last var of a matched chain -> what the subclass needs to replace it
        self.dropped: set = set()
        self.added = 0  # kernels added: numbers their symbols

    def matches(self, gv, func) -> list[tuple[relax.Var, list, object]]:
        """``(last var, inner vars, match)`` per chain of ``func`` to rewrite."""
        raise NotImplementedError

    def replacement(self, binding, match) -> relax.Expr:
        """The kernel call that replaces the chain ending at ``binding``."""
        raise NotImplementedError

    def add_kernel(self, prim: tvm.tir.PrimFunc, variant: str) -> relax.GlobalVar:
        """Add a template PrimFunc under ``"<variant>__<n>"``: a unique symbol whose kind (manifest, profile) is
        the part before ``__``."""
        self.added += 1
        # opaque to FuseOps (pattern 8, kOpaque): a template is a whole kernel. Left to AnnotateTIROpPattern, the
        # global pool template (its buffers aliased through decl_buffer) read as elementwise and was fused with
        # the reshape after it, which FuseTIR then rejected.
        prim = prim.without_attr("global_symbol").with_attr("op_pattern", 8)
        return self.builder_.add_func(prim, f"{variant}__{self.added}")

    def rewrite(self) -> tvm.IRModule:
        for gv, func in self.mod_.functions_items():
            if not isinstance(func, relax.Function):
                continue
            self.ends, self.dropped = {}, set()
            for end, inner, match in self.matches(gv, func):
                self.ends[end] = match
                self.dropped.update(inner)
            if self.ends:
                self.builder_.update_func(gv, self.visit_expr(func))
        return self.builder_.finalize()

    def visit_var_binding_(self, binding):
        if binding.var in self.dropped:
            return  # folded into the kernel call that replaces the chain's last binding
        match = self.ends.get(binding.var)
        if match is None:
            return super().visit_var_binding_(binding)
        call = self.replacement(binding, match)
        self.builder_.emit_normalized(relax.VarBinding(binding.var, self.builder_.normalize(call)))
