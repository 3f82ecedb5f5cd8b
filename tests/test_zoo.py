"""The model zoo: `export_onnx(name)` gives an ONNX file that ONNX Runtime runs to the same logits as the
PyTorch model from `build(name)`, with BatchNormalization kept, static shapes, IR 10 / opset 17, the
published parameter counts and deterministic, well-scaled weights."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import edgesparse.models as zoo
from edgesparse.errors import EdgesparseError
from edgesparse.models import export as zoo_export

NAMES = ["mobilenet_v1", "mobilenet_v2", "resnet18", "mlp"]
CNNS = ["mobilenet_v1", "mobilenet_v2", "resnet18"]
PRUNED = [f"{base}-p{pct}" for base in ("mobilenet_v1", "mobilenet_v2") for pct in (70, 80, 90)]

# Published parameter counts (weights + biases + BN affine; BN running statistics are buffers, not counted).
PUBLISHED_PARAMETERS = {"mobilenet_v1": 4.23e6, "mobilenet_v2": 3.50e6, "resnet18": 11.69e6}


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Every export in this module goes to a fresh cache, never the user's."""
    with pytest.MonkeyPatch.context() as mp:
        root = tmp_path_factory.mktemp("edgesparse-cache")
        mp.setenv("EDGESPARSE_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def models():
    cache: dict[str, torch.nn.Module] = {}

    def get(name: str) -> torch.nn.Module:
        if name not in cache:
            cache[name] = zoo.build(name)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def onnx_files(private_cache):
    return {}


def exported(onnx_files, name):
    if name not in onnx_files:
        onnx_files[name] = zoo.export_onnx(name)
    return onnx_files[name]


def seeded_input(name: str, seed: int = 1234) -> torch.Tensor:
    return torch.randn(zoo.ZOO[name].input_shape, generator=torch.Generator().manual_seed(seed))


def test_zoo_lists_the_models_and_pruned_variants_without_importing_torch():
    code = "import sys, edgesparse.models as m; print(','.join(m.ZOO)); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    listed = result.stdout.strip().split(",")
    assert sorted(listed) == sorted(NAMES + PRUNED)
    assert listed.index("mobilenet_v1-p70") == listed.index("mobilenet_v1") + 1  # variants beside their model
    for name, entry in zoo.ZOO.items():
        assert entry.name == name and entry.input_name == "input" and entry.description
        if name in PRUNED:
            base = zoo.ZOO[entry.base]
            assert entry.input_shape == base.input_shape and entry.sparsity == int(name[-2:]) / 100
            assert f"{name[-2:]}%" in entry.description


def test_unknown_model_is_a_user_error():
    with pytest.raises(EdgesparseError, match=r"unknown zoo model 'resnet50' \(known: mobilenet_v1, .*mlp\)"):
        zoo.build("resnet50")
    with pytest.raises(EdgesparseError, match="unknown zoo model 'x'"):
        zoo.export_onnx("x")


@pytest.mark.parametrize("name", NAMES)
def test_onnxruntime_matches_torch(name, models, onnx_files, private_cache):
    path = exported(onnx_files, name)
    assert path.parent == private_cache / "zoo"
    x = seeded_input(name)
    with torch.no_grad():
        reference = models(name)(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(["output"], {"input": x.numpy()})
    scale = float(np.abs(reference).std())
    np.testing.assert_allclose(got, reference, rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("name", NAMES)
def test_onnx_graph_is_static_ir10_opset17_with_batchnorm_kept(name, models, onnx_files):
    model = onnx.load(exported(onnx_files, name))
    assert model.ir_version == 10
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "input" and graph_output.name == "output"
    for value in [graph_input, graph_output, *model.graph.value_info]:
        dims = value.type.tensor_type.shape.dim
        assert all(d.HasField("dim_value") for d in dims), f"{value.name} has a dynamic shape"
    assert [d.dim_value for d in graph_input.type.tensor_type.shape.dim] == list(zoo.ZOO[name].input_shape)
    ops = [node.op_type for node in model.graph.node]
    assert "Identity" not in ops
    if name in CNNS:
        # Every Conv is followed by its own BN in these architectures: none was folded by the exporter.
        bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in models(name).modules())
        assert ops.count("BatchNormalization") == ops.count("Conv") == bns > 0


@pytest.mark.parametrize("name", PUBLISHED_PARAMETERS)
def test_parameter_count_matches_the_paper(name, models):
    count = sum(p.numel() for p in models(name).parameters())
    assert count == pytest.approx(PUBLISHED_PARAMETERS[name], rel=0.01)


def test_mlp_shape():
    widths = [(m.in_features, m.out_features) for m in zoo.build("mlp").modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [(784, 512), (512, 256), (256, 10)]


@pytest.mark.parametrize("name", NAMES)
def test_weights_are_deterministic_and_leave_global_rng_alone(name, models):
    torch.manual_seed(99)
    before = torch.get_rng_state()
    again = zoo.build(name)
    assert torch.equal(torch.get_rng_state(), before)
    first, second = models(name).state_dict(), again.state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert not again.training


@pytest.mark.parametrize("name", NAMES)
def test_logits_are_finite_and_of_order_one(name, models):
    with torch.no_grad():
        logits = torch.cat([models(name)(seeded_input(name, seed)) for seed in range(3)])
    assert torch.isfinite(logits).all()
    assert 0.5 < logits.std().item() < 2.0
    # Different inputs give different logits: the network does not collapse to a constant.
    assert (logits[0] - logits[1]).abs().max().item() > 1e-3


def test_export_cache_is_reused_and_copied(onnx_files, private_cache, tmp_path, monkeypatch):
    first = exported(onnx_files, "mlp")

    def must_not_rebuild(*args, **kwargs):
        raise AssertionError("exported again despite a cached file")

    monkeypatch.setattr(zoo_export, "_to_onnx_bytes", must_not_rebuild)
    assert zoo.export_onnx("mlp") == first
    copy = zoo.export_onnx("mlp", tmp_path / "net.onnx")
    assert copy == tmp_path / "net.onnx" and copy.read_bytes() == first.read_bytes()
    assert zoo.export_onnx("mlp", tmp_path) == tmp_path / "mlp.onnx"
    # No temporary files left behind.
    assert all(p.suffix == ".onnx" for p in (private_cache / "zoo").iterdir())


def test_cache_key_covers_opset_torch_version_and_source():
    entry = zoo.ZOO["mlp"]
    key = zoo_export.cache_key(entry, 17, "2.13.0")
    assert key == zoo_export.cache_key(entry, 17, "2.13.0")
    assert key != zoo_export.cache_key(entry, 18, "2.13.0")
    assert key != zoo_export.cache_key(entry, 17, "2.14.0")
    assert key != zoo_export.cache_key(zoo.ZOO["resnet18"], 17, "2.13.0")


# --- pruned variants ------------------------------------------------------------------------------------------------


def initializers(path) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def weight_kinds(path) -> dict[str, str]:
    """{weight initializer: "first conv" | "1x1" | "depthwise" | "fc" | "other conv"} of a zoo CNN."""
    kinds, first = {}, True
    for node in onnx.load(str(path)).graph.node:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Conv":
            if first:
                kinds[node.input[1]], first = "first conv", False
            elif attrs.get("group", 1) > 1:
                kinds[node.input[1]] = "depthwise"
            else:
                kinds[node.input[1]] = "1x1" if list(attrs["kernel_shape"]) == [1, 1] else "other conv"
        elif node.op_type in ("Gemm", "MatMul"):
            kinds[node.input[1]] = "fc"
    return kinds


@pytest.mark.parametrize("name", PRUNED)
def test_pruned_variant_prunes_exactly_its_1x1_convs(name, onnx_files):
    entry = zoo.ZOO[name]
    pruned, dense = initializers(exported(onnx_files, name)), initializers(exported(onnx_files, entry.base))
    kinds = weight_kinds(exported(onnx_files, name))
    assert pruned.keys() == dense.keys()
    assert sorted(set(kinds.values())) == ["1x1", "depthwise", "fc", "first conv"]
    for key, w in pruned.items():
        kind = kinds.get(key)
        if kind != "1x1":  # stem, depthwise, classifier and every BN parameter: untouched
            np.testing.assert_array_equal(w, dense[key], err_msg=f"{key} ({kind})")
            continue
        zeros = w.size - np.count_nonzero(w)
        assert zeros == round(entry.sparsity * w.size), key  # exactly what magnitude_prune zeroes
        kept = w != 0
        np.testing.assert_array_equal(w[kept], dense[key][kept])  # the survivors keep their values...
        assert np.abs(dense[key][kept]).min() >= np.abs(dense[key][~kept]).max()  # ...and are the largest


@pytest.mark.parametrize("name", ["mobilenet_v1-p90", "mobilenet_v2-p70"])
def test_pruned_variant_really_changes_the_outputs_and_builds_in_torch(name, onnx_files):
    x = seeded_input(name)
    outputs = {}
    for model in (name, zoo.ZOO[name].base):
        session = ort.InferenceSession(str(exported(onnx_files, model)), providers=["CPUExecutionProvider"])
        (outputs[model],) = session.run(["output"], {"input": x.numpy()})
    scale = float(np.abs(outputs[name]).max())
    assert np.abs(outputs[name] - outputs[zoo.ZOO[name].base]).max() > 0.1 * scale
    with torch.no_grad():  # build() is the pruned network as PyTorch: the same function as the pruned ONNX
        reference = zoo.build(name)(x).numpy()
    np.testing.assert_allclose(outputs[name], reference, rtol=1e-4, atol=1e-4 * scale)


def test_pruned_variant_is_cached_and_keyed_on_the_pruning(onnx_files, monkeypatch, tmp_path):
    first = exported(onnx_files, "mobilenet_v1-p80")

    def must_not_prune(*args, **kwargs):
        raise AssertionError("pruned again despite a cached file")

    monkeypatch.setattr(zoo_export, "_pruned_onnx_bytes", must_not_prune)
    assert zoo.export_onnx("mobilenet_v1-p80") == first
    key = zoo_export.cache_key(zoo.ZOO["mobilenet_v1-p80"], 17, "2.13.0")
    assert key != zoo_export.cache_key(zoo.ZOO["mobilenet_v1"], 17, "2.13.0")
    assert key != zoo_export.cache_key(zoo.ZOO["mobilenet_v1-p90"], 17, "2.13.0")
    monkeypatch.setattr(zoo_export, "_prune_source", lambda: tmp_path / "prune.py")
    (tmp_path / "prune.py").write_text("# another pruning\n")
    assert zoo_export.cache_key(zoo.ZOO["mobilenet_v1-p80"], 17, "2.13.0") != key


def test_pruned_variants_through_the_cli_and_sweep(tmp_path, onnx_files):
    from edgesparse.harness.sweep import resolve_model

    listed = subprocess.run([sys.executable, "-m", "edgesparse", "zoo", "list"], capture_output=True, text=True)
    assert all(name in listed.stdout for name in PRUNED), listed.stdout
    out = tmp_path / "m.onnx"
    proc = subprocess.run([sys.executable, "-m", "edgesparse", "zoo", "export", "mobilenet_v2-p90", "-o", out],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == exported(onnx_files, "mobilenet_v2-p90").read_bytes()
    swept = resolve_model("mobilenet_v2-p90", tmp_path)  # what `edgesparse sweep` and benchmarks/ start from
    assert swept.read_bytes() == out.read_bytes()
