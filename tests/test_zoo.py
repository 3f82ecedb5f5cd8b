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


def test_zoo_lists_the_four_models_without_importing_torch():
    code = "import sys, edgesparse.models as m; print(','.join(m.ZOO)); assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ",".join(NAMES)
    for name, entry in zoo.ZOO.items():
        assert entry.name == name and entry.input_name == "input" and entry.description


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
