"""Sparsify: rewrite 1x1 convolutions and fully-connected layers with constant, sparse weights into calls of the
f32-spmm kernels (``kernels/spmm``), with packed-weight constants.

Input: a Relax module as the frontend leaves it after ``DecomposeOpsForInference``, BN folding and
``FoldConstant`` (batch 1, NCHW). Matched per layer, fused into one kernel call:

* ``R.nn.conv2d`` with a constant ``[Cout, Cin, 1, 1]`` weight, stride 1, no padding, dilation 1, groups 1,
  NCHW/OIHW, input ``[1, Cin, H, W]``; or ``R.matmul`` of a ``[1, K]`` input by a constant ``[K, N]`` weight
  (ONNX Gemm/MatMul after constant folding of the transpose);
* then, each only if the previous value has no other use: an ``R.add`` of a constant per-output-channel bias;
  an ``R.add`` of another tensor of the output's shape (a skip connection: the kernel adds it, passes/epilogue.py);
  any chain of ``R.nn.relu``, ``R.clip``, ``R.maximum``/``R.minimum`` by a scalar constant (and the
  ``maximum``/``minimum`` ``call_tir`` that ``FoldConstant`` leaves for ONNX ``Clip``) folded into one clamp.
* and where the target's rule says it pays (kernels/spmm_dwconv.py ``fusion_pays``), the depthwise conv that is
  the 1x1's only user, with its own bias and clamp: one kernel computes both (``f32_spmm_<ep>_dwconv...``).

Policy: ``mode="auto"`` rewrites a layer when its weight sparsity >= ``min_sparsity`` and the target's cost
model (edgesparse/cost.py: calibrated on a device, else the descriptor's default) predicts the sparse kernel
faster than the dense one; ``"on"`` rewrites every eligible layer (XNNPACK's choice: all 1x1 convs of a sparse
network, dense ones too); ``"off"`` rewrites nothing but still reports. Every conv2d/matmul with a constant
weight gets a :class:`LayerDecision` in ``report`` (name, shape, sparsity, block, predicted times, sparse or
dense and why), for the manifest. The pass knows no instructions: the cost model knows the kernels' tiling.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np
import tvm
from tvm import relax
from tvm.relax.expr_functor import mutator

from edgesparse.cost import CostModel, LayerShape, load_cost_model, stored_weights
from edgesparse.errors import EdgesparseError
from edgesparse.kernels.spmm import (
    SpmmKernelSpec,
    choose_block,
    compact_stride,
    make_spmm_kernel,
    pack_spmm_weights,
    spmm_acc_registers_for,
    spmm_eo_rows_for,
    spmm_join_registers_for,
    spmm_pack_tile_for,
    spmm_plan_for,
    spmm_prefetch_for,
    spmm_tiling_for,
)

from edgesparse.kernels.spmm_dwconv import SpmmDwSpec, fusion_pays, make_spmm_dwconv_kernel, row_registers_for
from edgesparse.kernels.stride1 import DepthwiseS1Spec
from edgesparse.kernels.stride2 import DepthwiseS2Spec

from .dense_templates import conv_spec
from .epilogue import Uses, const_array, dtype_of, follow_epilogue, op_name, static_shape
from .kernel_calls import ChainRewriter

MODES = ("auto", "on", "off")
DEFAULT_MIN_SPARSITY = 0.5


@dataclass
class LayerDecision:
    """One conv2d/matmul layer with a constant weight, as the manifest records it."""

    name: str  # "<op>_<index>:<relax var of the layer's result>"
    op: str  # "conv2d" | "matmul"
    shape: tuple  # weight shape as imported: OIHW for conv2d, [K, N] for matmul
    pixels: int  # H*W of the output (1 for matmul)
    sparsity: float
    block: int | None  # output-channel block of the packed format (None when not eligible)
    sparse: bool
    reason: str
    kernel: str | None = None  # PrimFunc name in the module when sparse
    variant: str | None = None  # f32_spmm_<MR>x<block>_<epilogue>
    fused: list = field(default_factory=list)  # ops fused into the call: "bias", "clamp(lo,hi)", "depthwise3x3s2"
    index_dtype: str | None = None
    chunks: int | None = None  # input-channel chunks the kernel walks a tile in (kernels/spmm spmm_chunk_for)
    packed_bytes: int | None = None
    dense_bytes: int | None = None
    rows_even_odd_to: str | None = None  # the layer whose fused stride-2 depthwise conv reads this one's output,
    # stored with its rows even columns first, then odd (``_even_odd_rows``; no layout conversion between them)
    weight_digest: str = ""  # sha1 of the weight as imported (OIHW or [K, N] float32): matches onnx_weight_names
    # the cost model's predictions for an eligible layer (None when not eligible or no cost model)
    predicted_dense_ms: float | None = None
    predicted_sparse_ms: float | None = None
    predicted_gain: float | None = None  # dense / sparse: above 1 sparse is predicted faster

    def as_dict(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape)
        return d


def weight_digest(w: np.ndarray) -> str:
    """Short fingerprint of a float32 weight in the layout the Relax graph holds it."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    return hashlib.sha1(str(w.shape).encode() + w.tobytes()).hexdigest()[:16]


def onnx_weight_names(model) -> dict:
    """{weight digest: ONNX node name (or its output name)} for the Conv/Gemm/MatMul weights of ``model``, as
    the importer lays them out (Gemm transB=1 transposed to [K, N]). Pass it as ``sparsify(names=...)`` so the
    report names layers as the ONNX file does; weights changed by BN folding keep the generated name."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    names = {}
    for node in model.graph.node:
        label = node.name or (node.output[0] if node.output else node.op_type)
        if node.op_type in ("Conv", "Gemm", "MatMul") and len(node.input) > 1 and node.input[1] in inits:
            w = numpy_helper.to_array(inits[node.input[1]])
            if w.dtype != np.float32:
                continue
            if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute):
                w = w.T
            names[weight_digest(w)] = label
    return names


@dataclass
class _Layer:
    decision: LayerDecision
    x: relax.Expr
    w: np.ndarray  # [Cout, Cin]
    bias: np.ndarray | None
    residual: relax.Expr | None  # a skip connection's tensor added before the clamp
    clamp: tuple[float, float] | None
    end: relax.Var
    inner: list  # vars of the chain before `end` (dropped when the chain is rewritten)
    depthwise: "_Depthwise | None" = None  # set by the rewriter when the layer's kernel computes it too
    eo_width: int = 0  # store output rows of this width even columns first, then odd (a stride-2 consumer's input)


@dataclass
class _Depthwise:
    """The depthwise conv that is a sparse 1x1's only user, with its own bias and clamp: one fused kernel call."""

    spec: DepthwiseS1Spec | DepthwiseS2Spec  # its clamp set
    conv: relax.Var  # the conv's result
    w: np.ndarray  # [C, 1, k, k]
    bias: np.ndarray | None
    end: relax.Var
    inner: list  # the conv's own vars before ``end``
    eo_input: bool = False  # its 1x1's input rows arrive even columns first, then odd (``_even_odd_rows``)


def _eligible(value) -> tuple[str, str | None]:
    """(op, reason it cannot be rewritten or None) for a conv2d/matmul binding value with a constant weight."""
    name = op_name(value)
    if name == "relax.nn.conv2d":
        a = value.attrs
        x_shape = static_shape(value.args[0])
        w_shape = static_shape(value.args[1])
        if tuple(int(s) for s in w_shape[2:]) != (1, 1):
            return "conv2d", f"{w_shape[2]}x{w_shape[3]} kernel (only 1x1 is sparse)"
        if int(a.groups) != 1:
            return "conv2d", f"groups={int(a.groups)}"
        if any(int(s) != 1 for s in a.strides):
            return "conv2d", f"stride {[int(s) for s in a.strides]}"
        if any(int(p) != 0 for p in a.padding) or any(int(d) != 1 for d in a.dilation):
            return "conv2d", "padding or dilation"
        if str(a.data_layout) != "NCHW" or str(a.kernel_layout) != "OIHW" or str(a.out_layout) != "NCHW":
            return "conv2d", f"layout {a.data_layout}/{a.kernel_layout}"
        if x_shape is None or len(x_shape) != 4 or x_shape[0] != 1:
            return "conv2d", f"input shape {x_shape} (needs static batch 1)"
        if a.out_dtype not in (None, "", "float32") and str(a.out_dtype) not in ("float32", ""):
            return "conv2d", f"out_dtype {a.out_dtype}"
        return "conv2d", None
    if name == "relax.matmul":
        x_shape = static_shape(value.args[0])
        w_shape = static_shape(value.args[1])
        if w_shape is None or len(w_shape) != 2:
            return "matmul", f"weight shape {w_shape}"
        if x_shape is None or len(x_shape) != 2 or x_shape[0] != 1:
            return "matmul", f"input shape {x_shape} (needs [1, K])"
        return "matmul", None
    raise AssertionError(name)


def _decide(d: LayerDecision, mode: str, sparsity: float, min_sparsity: float, predicted: bool) -> None:
    """Sets ``d.sparse`` and ``d.reason`` (an eligible layer whose predictions, if any, are filled in)."""
    if mode == "off":
        d.sparse, d.reason = False, "dense: mode=off"
    elif mode == "on":
        d.sparse, d.reason = True, "sparse: mode=on"
    elif sparsity < min_sparsity:
        d.sparse, d.reason = False, f"dense: sparsity {sparsity:.3f} < min_sparsity {min_sparsity:g}"
    elif not predicted:
        d.sparse, d.reason = True, f"sparse: sparsity {sparsity:.3f} >= min_sparsity {min_sparsity:g} (no cost model)"
    else:
        d.sparse = d.predicted_gain > 1.0
        times = f"sparse {d.predicted_sparse_ms:.3g} ms vs dense {d.predicted_dense_ms:.3g} ms"
        d.reason = f"{'sparse' if d.sparse else 'dense'}: predicted {d.predicted_gain:.2f}x ({times})"


def plan_layers(func, *, mode: str, min_sparsity: float, names: dict | None = None,
                cost_model: CostModel | None = None, threads: int = 1, target=None) -> list[_Layer]:
    """Find the conv2d/matmul layers with constant float32 weights of ``func`` and decide each one; with a
    ``target``, also which sparse 1x1 computes the depthwise conv after it (``_depthwise_after``)."""
    uses = Uses(func)
    layers = []
    index = {"conv2d": 0, "matmul": 0}
    for binding in uses.bindings:
        value = binding.value
        if op_name(value) not in ("relax.nn.conv2d", "relax.matmul"):
            continue
        w_arr = const_array(value.args[1])
        if w_arr is None or w_arr.dtype != np.float32 or dtype_of(value.args[0]) != "float32":
            continue
        op, not_eligible = _eligible(value)
        w_shape = tuple(int(s) for s in w_arr.shape)
        out_shape = static_shape(binding.var) or ()
        digest = weight_digest(w_arr)
        name = (names or {}).get(digest) or f"{op}_{index[op]}:{binding.var.name}"
        index[op] += 1
        sparsity = 1.0 - np.count_nonzero(w_arr) / float(w_arr.size)
        if op == "conv2d":
            pixels = int(np.prod(out_shape[2:])) if len(out_shape) == 4 else 0
        else:
            pixels = 1
        decision = LayerDecision(name=name, op=op, shape=w_shape, pixels=pixels, sparsity=round(float(sparsity), 6),
                                 block=None, sparse=False, reason="", weight_digest=digest)
        if not_eligible is not None:
            decision.reason = f"dense: {not_eligible}"
            layers.append(_Layer(decision, value.args[0], None, None, None, None, binding.var, []))
            continue
        w = w_arr.reshape(w_shape[0], w_shape[1]) if op == "conv2d" else np.ascontiguousarray(w_arr.T)
        cout = w.shape[0]
        ep = follow_epilogue(binding.var, uses, cout, op, residual=True)
        decision.block = choose_block(w)
        decision.fused = ep.fused
        decision.dense_bytes = int(w.size * 4 + (cout * 4 if ep.bias is not None else 0))
        if cost_model is not None:
            p = cost_model.predict(LayerShape.from_weight(w, pixels, decision.block), threads)
            decision.predicted_dense_ms = round(p.dense_ms, 6)
            decision.predicted_sparse_ms = round(p.sparse_ms, 6)
            decision.predicted_gain = round(p.gain, 3)
        _decide(decision, mode, sparsity, min_sparsity, cost_model is not None)
        layers.append(_Layer(decision, value.args[0], w, ep.bias, ep.residual, ep.clamp, ep.end, ep.inner))
    if target is not None:
        for layer in layers:
            if layer.decision.sparse and (dw := _depthwise_after(layer, uses, target, threads)) is not None:
                layer.depthwise = dw
                for other in layers:  # the depthwise conv's own report line says where it went
                    if other.end.same_as(dw.conv):
                        other.decision.reason = f"dense: computed in the kernel of {layer.decision.name}"
        _even_odd_rows(layers, uses, target, threads)
    return layers


def spmm_tiling(target, layer: _Layer, threads: int):
    """(tiling, pack_tile) of a sparse layer's f32-spmm kernel on ``target`` (kernels/spmm/config.py)."""
    d = layer.decision
    reuse = float(np.count_nonzero(layer.w)) / layer.w.shape[1]  # output rows reading each input row
    tiling = spmm_tiling_for(target, d.pixels, d.block, layer.w.shape[1],
                             stored_weights(layer.w, d.block) / layer.w.shape[0], threads, reuse)
    return tiling, spmm_pack_tile_for(target, d.pixels, reuse)


def _even_odd_rows(layers: list[_Layer], uses: Uses, target, threads: int) -> None:
    """A sparse 1x1 fused with a stride-2 depthwise conv de-interleaves each row of its output into even and odd
    columns (kernels/stride2/rows.py) with shuffles, for each of its output channels. When its input is the only
    use of another sparse layer's output, that layer's kernel stores its rows even columns first instead (its
    vectors split as they are stored, kernels/spmm/template.py ``eo_width``), for its fewer channels, and the 1x1
    computes rows that are already split (kernels/spmm_dwconv.py ``eo_input``). Where the target's rule allows it
    (``spmm_eo_rows_for``)."""
    for layer in layers:
        dw = layer.depthwise
        if dw is None or not isinstance(dw.spec, DepthwiseS2Spec):
            continue
        producer = next((p for p in layers if p.decision.sparse and p.depthwise is None
                         and p.decision.op == "conv2d" and p.end.same_as(layer.x)), None)
        if producer is None or uses.single_user(producer.end) is None:
            continue
        d = producer.decision
        width = dw.spec.width  # the depthwise conv's input: the fused 1x1's, the producer's output
        tiling, _ = spmm_tiling(target, producer, threads)
        plan = spmm_plan_for(target, d.pixels, d.block, tiling.mr, threads)
        n_chunks = -(-producer.w.shape[1] // tiling.chunk)
        if spmm_eo_rows_for(target, width, plan, n_chunks, target.vector_lanes_f32):
            producer.eo_width = width
            dw.eo_input = True
            d.rows_even_odd_to = layer.decision.name


def _depthwise_after(layer: _Layer, uses: Uses, target, threads: int) -> _Depthwise | None:
    """The depthwise conv the sparse 1x1 ``layer`` feeds, when one kernel should compute both: the 1x1's output is
    only the conv's input, the rows walk takes the conv, and the target's rule (kernels/spmm_dwconv.py
    ``fusion_pays``: the descriptor's size of the 1x1's output and nonzeros per channel) says it pays."""
    d = layer.decision
    if d.op != "conv2d" or d.block != 1 or layer.residual is not None:
        return None
    cout = layer.w.shape[0]
    if not fusion_pays(target, 4 * cout * d.pixels, np.count_nonzero(layer.w) / cout):
        return None
    user = uses.single_user(layer.end)
    if user is None or op_name(user.value) != "relax.nn.conv2d" or not user.value.args[0].same_as(layer.end):
        return None
    spec = conv_spec(user.value, target, threads)
    if not isinstance(spec, (DepthwiseS1Spec, DepthwiseS2Spec)) or spec.walk != "rows":
        return None
    ep = follow_epilogue(user.var, uses, spec.channels, "conv2d")
    out_shape = static_shape(ep.end)
    if out_shape is None or out_shape != static_shape(user.var):
        return None
    return _Depthwise(dataclasses.replace(spec, clamp=ep.clamp), user.var, const_array(user.value.args[1]),
                      ep.bias, ep.end, ep.inner)


# --- rewriting ----------------------------------------------------------------------------------------------


@mutator
class _SparsifyRewriter(ChainRewriter):
    def __init__(self, mod, target, threads, layers_by_func):
        super().__init__(mod)
        self.target, self.threads, self.layers_by_func = target, threads, layers_by_func

    def matches(self, gv, func):
        found = []
        for layer in self.layers_by_func.get(gv, ()):
            if not layer.decision.sparse:
                continue
            if (dw := layer.depthwise) is None:
                found.append((layer.end, layer.inner, layer))
            else:
                found.append((dw.end, [*layer.inner, layer.end, *dw.inner], layer))
        return found

    def replacement(self, binding, layer):
        if layer.depthwise is not None:
            return self._fused_replacement(binding, layer)
        d = layer.decision
        tiling, pack_tile = spmm_tiling(self.target, layer, self.threads)
        mr, chunk = tiling.mr, tiling.chunk
        lanes, acc_registers = self.target.vector_lanes_f32, spmm_acc_registers_for(self.target)
        # activation offsets: channel * (row stride of the tile the kernel reads), chunk-local in a packed tile
        stride = tiling.row_floats if pack_tile else d.pixels
        stride = compact_stride(chunk if pack_tile else layer.w.shape[1], stride)
        packed = pack_spmm_weights(layer.w, layer.bias, block=d.block, chunk=chunk, stride=stride,
                                   chunk_local=pack_tile)
        x = self.visit_expr(layer.x)
        in_shape = static_shape(layer.x)
        out_shape = static_shape(binding.var)
        spec = SpmmKernelSpec.for_packed(packed, d.pixels, mr, clamp=layer.clamp, threads=self.threads,
                                         lanes=lanes, acc_registers=acc_registers,
                                         join_registers=spmm_join_registers_for(self.target), pack_tile=pack_tile,
                                         prefetch=spmm_prefetch_for(self.target, layer.w.shape[1], layer.w.shape[0],
                                                                    d.pixels, self.threads),
                                         residual=layer.residual is not None, eo_width=layer.eo_width,
                                         in_shape=in_shape, out_shape=out_shape)
        gvar = self.add_kernel(make_spmm_kernel(spec), spec.variant)
        d.kernel = gvar.name_hint
        d.variant = spec.variant
        d.index_dtype = packed.index_dtype
        d.chunks = packed.n_chunks
        d.packed_bytes = packed.nbytes
        args = [x, relax.const(packed.values), relax.const(packed.segment_ptr), relax.const(packed.channel_index)]
        if layer.residual is not None:
            args.append(self.visit_expr(layer.residual))
        return relax.call_tir(gvar, relax.Tuple(args), out_ty=relax.TensorType(list(out_shape), "float32"))

    def _fused_replacement(self, binding, layer):
        """One call of the 1x1 and the depthwise conv after it: blocks of one, one chunk, offsets into X."""
        d, dw = layer.decision, layer.depthwise
        cin = layer.w.shape[1]
        packed = pack_spmm_weights(layer.w, layer.bias, block=1, stride=compact_stride(cin, d.pixels))
        spec = SpmmDwSpec(cin, int(packed.values.size), int(packed.channel_index.size), packed.index_dtype,
                          packed.stride, layer.clamp, dw.spec,
                          row_registers_for(self.target), dw.eo_input)
        gvar = self.add_kernel(make_spmm_dwconv_kernel(spec), spec.variant)
        d.kernel, d.variant = gvar.name_hint, spec.variant
        d.index_dtype, d.chunks, d.packed_bytes = packed.index_dtype, packed.n_chunks, packed.nbytes
        d.fused = [*d.fused, f"depthwise{dw.spec.kernel}x{dw.spec.kernel}s{dw.spec.stride}"]
        bias = np.zeros(dw.spec.channels, np.float32) if dw.bias is None else dw.bias.astype(np.float32)
        args = [self.visit_expr(layer.x), relax.const(packed.values), relax.const(packed.segment_ptr),
                relax.const(packed.channel_index), relax.const(dw.w), relax.const(bias)]
        return relax.call_tir(gvar, relax.Tuple(args),
                              out_ty=relax.TensorType(list(static_shape(binding.var)), "float32"))


def sparsify(
    mod: tvm.IRModule,
    target,
    *,
    mode: str = "auto",
    min_sparsity: float | None = None,
    threads: int = 1,
    report: list | None = None,
    names: dict | None = None,
    cost_model: CostModel | None | str = "target",
) -> tvm.IRModule:
    """Rewrite eligible layers of every Relax function in ``mod`` (see the module doc); append one
    :class:`LayerDecision` per conv2d/matmul with a constant weight to ``report``.

    ``target``: an ``edgesparse.targets.Target`` or its name (it sets the kernels' pixel tile).
    ``names``: optional ``{weight digest: layer name}``, e.g. :func:`onnx_weight_names` of the source model.
    ``min_sparsity`` defaults to the descriptor's ``tiles.spmm_min_sparsity``, else 0.5.
    ``cost_model``: ``"target"`` (default) for the target's (:func:`edgesparse.cost.load_cost_model`: its cached
    calibration, else the descriptor's ``[sparse_cost]``); None for none: ``auto`` then goes by sparsity alone."""
    if mode not in MODES:
        raise EdgesparseError(f"sparsify mode '{mode}' is not one of {', '.join(MODES)}")
    if isinstance(target, str):
        from edgesparse.targets import get_target

        target = get_target(target)
    if min_sparsity is None:
        min_sparsity = float(target.tiles.get("spmm_min_sparsity", DEFAULT_MIN_SPARSITY))
    if not 0.0 <= min_sparsity <= 1.0:
        raise EdgesparseError(f"min_sparsity {min_sparsity} is not in [0, 1]")
    if isinstance(cost_model, str):
        if cost_model != "target":
            raise EdgesparseError(f"sparsify cost_model '{cost_model}' is not a CostModel, None or 'target'")
        cost_model = load_cost_model(target)
    layers_by_func = {}
    for gv, func in mod.functions_items():
        if isinstance(func, relax.Function):
            layers_by_func[gv] = plan_layers(func, mode=mode, min_sparsity=min_sparsity, names=names,
                                             cost_model=cost_model, threads=threads, target=target)
    out = _SparsifyRewriter(mod, target, threads, layers_by_func).rewrite()
    if report is not None:
        for layers in layers_by_func.values():
            report.extend(layer.decision for layer in layers)
    return out


class SparsifyPass:
    """``sparsify`` as a callable module pass; ``.report`` holds the decisions of the last run."""

    def __init__(self, target, *, mode: str = "auto", min_sparsity: float | None = None, threads: int = 1,
                 names: dict | None = None, cost_model: CostModel | None | str = "target"):
        self.target, self.mode, self.min_sparsity, self.threads = target, mode, min_sparsity, threads
        self.names, self.cost_model = names, cost_model
        self.report: list[LayerDecision] = []

    def __call__(self, mod: tvm.IRModule) -> tvm.IRModule:
        self.report = []
        return sparsify(mod, self.target, mode=self.mode, min_sparsity=self.min_sparsity, threads=self.threads,
                        report=self.report, names=self.names, cost_model=self.cost_model)
