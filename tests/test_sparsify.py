"""Sparsify pass: small ONNX models with pruned weights, imported with from_onnx, rewritten, lowered with the
compile spine's pass list, built with tvm.compile for the host and run in the Relax VM, against onnxruntime.

The rewrite tests use mode="on" (these layers are too small for any cost model to predict a gain); `auto`'s
policy is tested with cost models built here, whose predictions are known."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import tvm
from onnx import TensorProto, helper, numpy_helper
from tvm import relax
from tvm.relax.frontend.onnx import from_onnx

from edgesparse.cost import DENSE_TERMS, SPARSE_TERMS, CostModel
from edgesparse.errors import EdgesparseError
from edgesparse.lower.relax_to_tir import lower_to_kernels
from edgesparse.passes.sparsify import SparsifyPass, onnx_weight_names, sparsify
from edgesparse.prune import magnitude_prune, prune_onnx
from edgesparse.targets import get_target

HOST = get_target("x86_64")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """No calibration from the user's cache decides `auto` here."""
    monkeypatch.setenv("EDGESPARSE_CACHE", str(tmp_path / "cache"))


def fixed_cost(sparse: dict, dense: dict) -> CostModel:
    """A cost model of HOST with the given ms per unit of a few terms, the others free."""
    return CostModel(HOST, {t: sparse.get(t, 0.0) for t in SPARSE_TERMS}, {t: dense.get(t, 0.0) for t in DENSE_TERMS},
                     "default")


#: sparse 0.2 ms, dense 0.1 ms for every layer: sparse never pays
DENSE_IS_CHEAP = fixed_cost({"call": 0.2}, {"call": 0.1})
#: a microsecond per stored weight sparse, per weight dense: the gain is weights / stored weights
BY_WEIGHTS = fixed_cost({"stored_weights": 1e-3}, {"weights": 1e-3})


# --- model builders ---------------------------------------------------------------------------------------------


class Graph:
    """A tiny ONNX graph builder: nodes, initializers, one input, one output."""

    def __init__(self, x_shape, seed=0):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.x_shape, self.n = [], [], x_shape, 0

    def name(self, prefix):
        self.n += 1
        return f"{prefix}{self.n}"

    def init(self, array, prefix="w"):
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def weight(self, shape, sparsity=0.0):
        w = self.rng.standard_normal(shape).astype(np.float32) / np.sqrt(np.prod(shape[1:]))
        return magnitude_prune(w, sparsity) if sparsity else w

    def op(self, op_type, inputs, **attrs):
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def conv(self, x, cout, cin, k=1, sparsity=0.0, bias=True, stride=1, groups=1):
        w = self.init(self.weight((cout, cin // groups, k, k), sparsity))
        ins = [x, w] + ([self.init(self.rng.standard_normal(cout) * 0.1, "b")] if bias else [])
        return self.op("Conv", ins, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[stride, stride], group=groups)

    def relu6(self, x):
        return self.op("Clip", [x, self.init(np.array(0.0), "lo"), self.init(np.array(6.0), "hi")])

    def model(self, y, y_shape):
        g = helper.make_graph(
            self.nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(self.x_shape))],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, list(y_shape))], self.inits,
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 10
        onnx.checker.check_model(m)
        return m


def import_model(model):
    mod = from_onnx(model, keep_params_in_input=False)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    return relax.transform.FoldConstant()(mod)


def compile_and_compare(model, **sparsify_kw):
    """Run the spine with the sparsify pass; compare with onnxruntime; return (report, lowered module)."""
    report = []
    mod = sparsify(import_model(model), HOST, report=report, names=onnx_weight_names(model), **sparsify_kw)
    target = HOST.tvm_target()
    lowered = lower_to_kernels(mod, target)  # the spine's lowering, without dense schedules
    ex = tvm.compile(lowered, target=target)
    vm = relax.VirtualMachine(ex, tvm.cpu())
    x = np.random.default_rng(123).standard_normal(model.graph.input[0].type.tensor_type.shape.dim and [
        d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(x)).numpy()
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    scale = max(float(np.abs(want).max()), 1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    return report, lowered


def spmm_calls(lowered):
    return sorted(gv.name_hint for gv in lowered.get_global_vars() if gv.name_hint.startswith("f32_spmm_"))


# --- rewrites -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act", ["relu", "relu6", "none"])
@pytest.mark.parametrize("hw", [(8, 8), (7, 7), (1, 1)])
def test_conv1x1_bias_activation_rewritten(act, hw):
    g = Graph((1, 24, *hw), seed=hw[0])
    y = g.conv("x", 40, 24, sparsity=0.8)
    y = {"relu": lambda v: g.op("Relu", [v]), "relu6": g.relu6, "none": lambda v: v}[act](y)
    report, lowered = compile_and_compare(g.model(y, (1, 40, *hw)), mode="on")
    (layer,) = report
    assert layer.sparse and layer.op == "conv2d" and layer.shape == (40, 24, 1, 1)
    assert abs(layer.sparsity - 0.8) < 0.01
    assert layer.fused == ["bias"] + ({"relu": ["clamp(0,inf)"], "relu6": ["clamp(0,6)"], "none": []}[act])
    assert spmm_calls(lowered) == [layer.kernel]
    assert layer.variant.endswith({"relu": "_relu", "relu6": "_relu6", "none": "_linear"}[act])


def test_conv1x1_without_bias_and_cout_remainder():
    g = Graph((1, 16, 5, 9))
    y = g.conv("x", 7, 16, sparsity=0.7, bias=False)
    report, lowered = compile_and_compare(g.model(y, (1, 7, 5, 9)), mode="on")
    assert report[0].sparse and report[0].fused == []


def test_structured_blocks_choose_block4():
    g = Graph((1, 32, 6, 6))
    w = g.rng.standard_normal((64, 32)).astype(np.float32)
    w *= np.repeat(g.rng.random((16, 32)) < 0.25, 4, axis=0)  # 1x4 blocks: 4 outputs share a mask
    wname = g.init(w.reshape(64, 32, 1, 1))
    y = g.op("Conv", ["x", wname, g.init(g.rng.standard_normal(64), "b")], kernel_shape=[1, 1])
    y = g.op("Relu", [y])
    report, _ = compile_and_compare(g.model(y, (1, 64, 6, 6)), mode="on")
    assert report[0].sparse and report[0].block == 4 and "_16x4_" in report[0].variant


def test_dense_weights_stay_dense_in_auto_and_rewritten_in_on():
    g = Graph((1, 8, 4, 4))
    y = g.op("Relu", [g.conv("x", 8, 8)])
    model = g.model(y, (1, 8, 4, 4))
    report, lowered = compile_and_compare(model, mode="auto", min_sparsity=0.5)
    assert not report[0].sparse and "sparsity 0.000 < min_sparsity 0.5" in report[0].reason
    assert spmm_calls(lowered) == []
    report, lowered = compile_and_compare(model, mode="on")
    assert report[0].sparse and len(spmm_calls(lowered)) == 1


def test_auto_follows_the_cost_model():
    g = Graph((1, 16, 8, 8))
    y = g.op("Relu", [g.conv("x", 32, 16, sparsity=0.8)])
    model = g.model(y, (1, 32, 8, 8))
    nnz = 32 * 16 - round(0.8 * 32 * 16)

    report, lowered = compile_and_compare(model, cost_model=DENSE_IS_CHEAP)
    (layer,) = report
    assert not layer.sparse and spmm_calls(lowered) == []
    assert layer.reason == "dense: predicted 0.50x (sparse 0.2 ms vs dense 0.1 ms)"
    assert (layer.predicted_sparse_ms, layer.predicted_dense_ms, layer.predicted_gain) == (0.2, 0.1, 0.5)

    report, lowered = compile_and_compare(model, cost_model=BY_WEIGHTS)
    (layer,) = report
    assert layer.sparse and spmm_calls(lowered) == [layer.kernel]
    assert layer.predicted_gain == round(512 / nnz, 3) and layer.reason.startswith(f"sparse: predicted {512 / nnz:.2f}x")

    # the sparsity threshold comes first; predictions are still reported
    report, _ = compile_and_compare(model, cost_model=BY_WEIGHTS, min_sparsity=0.9)
    assert not report[0].sparse and report[0].reason == "dense: sparsity 0.801 < min_sparsity 0.9"
    assert report[0].predicted_gain == round(512 / nnz, 3)

    # on/off do not ask the model, but report what it predicts
    report, _ = compile_and_compare(model, mode="on", cost_model=DENSE_IS_CHEAP)
    assert report[0].sparse and report[0].reason == "sparse: mode=on" and report[0].predicted_gain == 0.5
    report, _ = compile_and_compare(model, mode="off", cost_model=BY_WEIGHTS)
    assert not report[0].sparse and report[0].predicted_gain == round(512 / nnz, 3)

    # without any cost model auto goes by sparsity alone, and says so
    report, _ = compile_and_compare(model, cost_model=None)
    assert report[0].sparse and report[0].reason.endswith("(no cost model)") and report[0].predicted_gain is None


def test_auto_uses_the_targets_cost_model_by_default():
    """The default cost model (descriptor's, no cache here) decides per layer: a big 90% layer goes sparse, a
    small one whose call overhead dominates does not, each with its reason."""
    g = Graph((1, 256, 14, 14))
    y = g.op("Relu", [g.conv("x", 256, 256, sparsity=0.9)])
    y = g.conv(y, 4, 256, sparsity=0.9)  # 4 output channels: 103 nonzeros, nothing to gain
    report, lowered = compile_and_compare(g.model(y, (1, 4, 14, 14)))
    big, small = report
    assert big.sparse and big.predicted_gain > 1 and big.reason.startswith("sparse: predicted")
    assert not small.sparse and small.predicted_gain <= 1 and small.reason.startswith("dense: predicted")
    assert spmm_calls(lowered) == [big.kernel]


def test_mode_off_rewrites_nothing():
    g = Graph((1, 8, 4, 4))
    y = g.conv("x", 8, 8, sparsity=0.9)
    report, lowered = compile_and_compare(g.model(y, (1, 8, 4, 4)), mode="off")
    assert not report[0].sparse and report[0].reason == "dense: mode=off"
    assert spmm_calls(lowered) == []


@pytest.mark.parametrize("kind", ["3x3", "depthwise", "stride2"])
def test_non_1x1_convs_not_rewritten(kind):
    g = Graph((1, 8, 8, 8))
    if kind == "3x3":
        y = g.conv("x", 8, 8, k=3, sparsity=0.9)
    elif kind == "depthwise":
        y = g.conv("x", 8, 8, k=3, groups=8, sparsity=0.5)
    else:
        y = g.conv("x", 8, 8, k=1, stride=2, sparsity=0.9)
    out_hw = 4 if kind == "stride2" else 8
    report, lowered = compile_and_compare(g.model(y, (1, 8, out_hw, out_hw)), mode="on")
    assert not report[0].sparse and report[0].reason.startswith("dense:")
    assert spmm_calls(lowered) == []


def test_gemm_and_matmul_rewritten():
    g = Graph((1, 48))
    w1 = g.init(g.weight((32, 48), 0.8))  # Gemm transB=1: W[N, K]
    y = g.op("Gemm", ["x", w1, g.init(g.rng.standard_normal(32), "b")], transB=1)
    y = g.op("Relu", [y])
    y = g.op("MatMul", [y, g.init(g.weight((32, 10), 0.7))])  # MatMul: W[K, N]
    report, lowered = compile_and_compare(g.model(y, (1, 10)), mode="on")
    assert [l.op for l in report] == ["matmul", "matmul"]
    assert [l.name for l in report] == ["gemm3", "matmul6"]  # ONNX node names, found by weight digest
    assert all(l.sparse for l in report)
    assert report[0].fused == ["bias", "clamp(0,inf)"] and report[1].fused == []
    assert len(spmm_calls(lowered)) == 2


def test_skip_connection_added_in_the_kernel():
    """A MobileNetV2 block's end (linear 1x1 + Add of the block input) and a ResNet one's (1x1 + bias + Add + Relu):
    the Add is folded into the SpMM call as its residual, before the clamp; the outputs equal ONNX Runtime's."""
    g = Graph((1, 16, 6, 6))
    e = g.relu6(g.conv("x", 32, 16, sparsity=0.8))
    y = g.op("Add", [g.conv(e, 16, 32, sparsity=0.8), "x"])  # linear bottleneck + skip
    z = g.op("Relu", [g.op("Add", [y, g.conv(y, 16, 16, sparsity=0.7)])])  # skip first: add(skip, conv)
    report, lowered = compile_and_compare(g.model(z, (1, 16, 6, 6)), mode="on")
    assert [l.fused for l in report] == [["bias", "clamp(0,6)"], ["bias", "residual"],
                                         ["bias", "residual", "clamp(0,inf)"]]
    calls = spmm_calls(lowered)
    assert len(calls) == 3 and sum("_add_" in c for c in calls) == 2, calls


def test_conv_output_with_two_users_keeps_its_value():
    g = Graph((1, 16, 4, 4))
    c = g.conv("x", 16, 16, sparsity=0.8, bias=False)
    r = g.op("Relu", [c])
    y = g.op("Add", [r, c])  # the conv result is used twice: the relu is not fused
    report, lowered = compile_and_compare(g.model(y, (1, 16, 4, 4)), mode="on")
    assert report[0].sparse and report[0].fused == []


def test_mobilenet_like_block_pruned_with_prune_onnx(tmp_path):
    g = Graph((1, 3, 16, 16))
    y = g.relu6(g.conv("x", 16, 3, k=3, stride=2))  # stem: 8x8
    for cin, cout in [(16, 32), (32, 64)]:
        y = g.relu6(g.conv(y, cin, cin, k=3, groups=cin))
        y = g.relu6(g.conv(y, cout, cin))
    y = g.op("GlobalAveragePool", [y])
    y = g.op("Flatten", [y])
    y = g.op("Gemm", [y, g.init(g.weight((10, 64))), g.init(np.zeros(10), "b")], transB=1)
    dense = tmp_path / "dense.onnx"
    onnx.save(g.model(y, (1, 10)), str(dense))
    pruned_path = tmp_path / "pruned.onnx"
    prune = prune_onnx(dense, pruned_path, 0.8)
    kinds = {(t.op, t.pruned, t.reason.split(":")[-1].strip()) for t in prune.layers}
    assert ("Conv", False, "first conv") in kinds and ("Gemm", False, "last fully-connected layer") in kinds
    assert ("Conv", False, "depthwise conv") in kinds
    assert sum(t.pruned for t in prune.layers) == 2
    report, lowered = compile_and_compare(onnx.load(str(pruned_path)), cost_model=BY_WEIGHTS)
    sparse = [l for l in report if l.sparse]
    assert [l.shape for l in sparse] == [(32, 16, 1, 1), (64, 32, 1, 1)]
    assert all(l.fused == ["bias", "clamp(0,6)"] for l in sparse)
    assert {l.reason for l in report if not l.sparse} >= {"dense: 3x3 kernel (only 1x1 is sparse)"}
    for l in sparse:  # BY_WEIGHTS: 1 us per weight, dense or stored
        size = int(np.prod(l.shape))
        nnz = size - round(0.8 * size)
        assert l.reason == f"sparse: predicted {size / nnz:.2f}x (sparse {nnz * 1e-3:.3g} ms vs dense {size * 1e-3:.3g} ms)"
    fc = report[-1]  # left dense by prune: the sparsity test comes before the cost model's
    assert fc.reason == "dense: sparsity 0.000 < min_sparsity 0.5"
    # still predicted, by weights: 640 dense; packed in blocks of 4 (all filled), 2 full blocks x 64 columns and
    # 2 remainder rows x 64 nonzeros, each column 4 values wide (kernels/spmm/pack.py)
    assert fc.predicted_gain == pytest.approx(640 / ((2 * 64 + 2 * 64) * 4))


def test_sparsify_pass_object_and_bad_mode():
    g = Graph((1, 8, 4, 4))
    mod = import_model(g.model(g.conv("x", 8, 8, sparsity=0.9), (1, 8, 4, 4)))
    p = SparsifyPass("x86_64", min_sparsity=0.95)
    p(mod)
    assert len(p.report) == 1 and not p.report[0].sparse
    assert p.report[0].as_dict()["shape"] == [8, 8, 1, 1]
    with pytest.raises(EdgesparseError):
        sparsify(mod, HOST, mode="sometimes")


# --- prune ----------------------------------------------------------------------------------------------------------


def test_magnitude_prune_exact_count():
    w = np.arange(1, 101, dtype=np.float32).reshape(10, 10) * np.where(np.arange(100) % 2, 1, -1).reshape(10, 10)
    p = magnitude_prune(w, 0.9)
    assert np.count_nonzero(p) == 10 and set(np.abs(p[p != 0])) == set(range(91, 101))


def test_prune_onnx_report_and_output(tmp_path):
    g = Graph((1, 4, 8, 8))
    y = g.op("Relu", [g.conv("x", 16, 4, k=3)])
    y = g.conv(y, 32, 16)
    y = g.op("GlobalAveragePool", [y])
    y = g.op("Flatten", [y])
    y = g.op("MatMul", [y, g.init(g.weight((32, 20)))])
    y = g.op("Gemm", [y, g.init(g.weight((10, 20)))], transB=1)
    src = tmp_path / "m.onnx"
    onnx.save(g.model(y, (1, 10)), str(src))
    rep = prune_onnx(src, tmp_path / "p.onnx", 0.75)
    by_op = [(t.op, t.pruned) for t in rep.layers]
    assert by_op == [("Conv", False), ("Conv", True), ("MatMul", True), ("Gemm", False)]
    assert all(abs(t.sparsity_after - 0.75) < 0.01 for t in rep.layers if t.pruned)
    rep_all = prune_onnx(src, tmp_path / "q.onnx", 0.5, skip_first_conv=False, skip_last_fc=False)
    assert all(t.pruned for t in rep_all.layers)
    out = onnx.load(str(tmp_path / "p.onnx"))
    inits = {t.name: numpy_helper.to_array(t) for t in out.graph.initializer}
    assert np.mean(inits[rep.layers[1].initializer] == 0) == pytest.approx(0.75, abs=0.01)
    ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(EdgesparseError):
        prune_onnx(tmp_path / "missing.onnx", tmp_path / "x.onnx", 0.5)


# --- epilogues written directly in Relax (what other frontends and passes produce) ----------------------------------


def relax_module(epilogue):
    """x[1,16,6,6] -> conv2d 1x1 (80% sparse) -> + bias -> epilogue, built with the BlockBuilder."""
    rng = np.random.default_rng(21)
    w = magnitude_prune(rng.standard_normal((24, 16, 1, 1)).astype(np.float32), 0.8)
    b = rng.standard_normal((1, 24, 1, 1)).astype(np.float32)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([1, 16, 6, 6], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.nn.conv2d(x, relax.const(w)))
            y = bb.emit(relax.op.add(relax.const(b), y))  # bias on the left
            for op in epilogue:
                y = bb.emit(op(y))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    ref = lambda xv: np.einsum("oc,chw->ohw", w[:, :, 0, 0], xv[0])[None] + b
    return bb.get(), ref


@pytest.mark.parametrize(
    "name, epilogue, clamp",
    [
        ("clip", [lambda v: relax.op.clip(v, -0.5, 0.25)], (-0.5, 0.25)),
        ("relu6", [lambda v: relax.op.nn.relu6(v)], (0.0, 6.0)),
        ("max_min", [lambda v: relax.op.maximum(v, relax.const(np.float32(-1.0))),
                     lambda v: relax.op.minimum(relax.const(np.float32(2.0)), v)], (-1.0, 2.0)),
        ("relu_then_clip", [relax.op.nn.relu, lambda v: relax.op.clip(v, -3.0, 1.5)], (0.0, 1.5)),
    ],
)
def test_relax_epilogues_fused(name, epilogue, clamp):
    mod, ref = relax_module(epilogue)
    report = []
    mod = sparsify(mod, HOST, report=report, mode="on")
    (layer,) = report
    assert layer.sparse and layer.fused == ["bias", f"clamp({clamp[0]:g},{clamp[1]:g})"], layer.fused
    target = HOST.tvm_target()
    lowered = lower_to_kernels(mod, target)
    assert len(spmm_calls(lowered)) == 1
    vm = relax.VirtualMachine(tvm.compile(lowered, target=target), tvm.cpu())
    xv = np.random.default_rng(5).standard_normal((1, 16, 6, 6)).astype(np.float32)
    got = vm["main"](tvm.runtime.tensor(xv)).numpy()
    np.testing.assert_allclose(got, np.clip(ref(xv), *clamp), rtol=1e-4, atol=1e-5)


def test_block_pruning_zeroes_whole_output_channel_blocks(tmp_path):
    """--block 4: every input position keeps or drops 4 consecutive output channels together (conv axis 0,
    Gemm transB=1 axis 0), the sparsity is exact on whole blocks, and the packer then chooses blocks of 4."""
    from edgesparse.kernels.spmm import choose_block
    from edgesparse.prune import magnitude_prune

    rng = np.random.default_rng(3)
    w = rng.standard_normal((64, 32, 1, 1)).astype(np.float32)
    p = magnitude_prune(w, 0.75, block=4, out_axis=0)
    nz = (p.reshape(16, 4, 32) != 0)
    assert (nz.all(axis=1) | ~nz.any(axis=1)).all()  # blocks are all kept or all zero
    assert (p == 0).mean() == 0.75
    kept = np.sqrt((w.reshape(16, 4, 32) ** 2).sum(1))
    assert kept[nz.any(axis=1)].min() >= kept[~nz.any(axis=1)].max()  # the largest-norm blocks survive
    assert choose_block(p.reshape(64, 32)) == 4
    fc = rng.standard_normal((10, 30)).astype(np.float32)  # 10 rows: 2 blocks of 4 + 2 rows unstructured
    q = magnitude_prune(fc, 0.5, block=4, out_axis=0)
    assert (q[:8].reshape(2, 4, 30) != 0).any(axis=1).sum() == 30 and (q[8:] == 0).mean() == 0.5
