"""Export zoo models to ONNX, once: results are cached by model, opset, source hash and torch version.

The cache lives in `$EDGESPARSE_CACHE/zoo/` (default `~/.cache/edgesparse/zoo/`). Files are written to a
temporary name in the same folder and renamed into place, so a concurrent or interrupted export never
leaves a half-written model behind. A pruned variant is its dense model's (cached) export run through
`edgesparse.prune.prune_onnx`, cached the same way (the pruning code is part of its key).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path

from .zoo import OUTPUT_NAME, ZooEntry, get_entry

# onnxruntime-web refuses the IR version torch's exporter may write; 10 is what it accepts with opset 17.
ONNX_IR_VERSION = 10

# Besides each architecture's own module, these shape the exported weights or graph.
_SHARED_SOURCES = ("init.py", "zoo.py", "export.py")


def cache_dir() -> Path:
    root = os.environ.get("EDGESPARSE_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "edgesparse"
    return base / "zoo"


def _prune_source() -> Path:
    from edgesparse import prune

    return Path(prune.__file__)


def cache_key(entry: ZooEntry, opset: int, torch_version: str) -> str:
    digest = hashlib.sha256(f"{entry.name}\0opset{opset}\0torch{torch_version}\0".encode())
    sources = [entry.source_file, *(entry.source_file.with_name(s) for s in _SHARED_SOURCES)]
    if entry.sparsity is not None:
        digest.update(f"pruned {entry.base} {entry.sparsity!r}\0".encode())
        sources.append(_prune_source())
    for source in sources:
        digest.update(source.read_bytes())
    return digest.hexdigest()[:16]


def _atomic_write(data: bytes, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=destination.parent, prefix=f".{destination.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the cache and copies are ordinary files
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _to_onnx_bytes(entry: ZooEntry, opset: int) -> bytes:
    import onnx
    import torch

    model = entry.build()
    example = torch.zeros(entry.input_shape)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message=".*feature will be removed")
        # The TorchScript exporter (dynamo=False; the dynamo one needs onnxscript). Its constant folding in
        # eval mode is what merges BatchNormalization into the preceding Conv; it is turned off so the
        # graph keeps its BN nodes for the compiler's own BN-fold pass to handle. No dynamic_axes: all
        # shapes are static.
        torch.onnx.export(
            model,
            (example,),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[entry.input_name],
            output_names=[OUTPUT_NAME],
            training=torch.onnx.TrainingMode.EVAL,
            do_constant_folding=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    proto.ir_version = ONNX_IR_VERSION
    proto = onnx.shape_inference.infer_shapes(proto, strict_mode=True)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _pruned_onnx_bytes(entry: ZooEntry, opset: int) -> bytes:
    """The dense model's export, pruned with prune_onnx's defaults."""
    from edgesparse.prune import prune_onnx

    dense = export_onnx(entry.base, opset=opset)
    with tempfile.TemporaryDirectory(prefix="edgesparse-zoo-") as tmp:
        out = Path(tmp) / f"{entry.name}.onnx"
        prune_onnx(dense, out, entry.sparsity)
        return out.read_bytes()


def export_onnx(name: str, path: str | os.PathLike | None = None, *, opset: int = 17) -> Path:
    """Export the named zoo model to ONNX (cached) and return the file; copied to `path` when given."""
    import torch

    entry = get_entry(name)
    cached = cache_dir() / f"{name}-opset{opset}-{cache_key(entry, opset, torch.__version__)}.onnx"
    if not cached.exists():
        data = _pruned_onnx_bytes(entry, opset) if entry.sparsity is not None else _to_onnx_bytes(entry, opset)
        _atomic_write(data, cached)
    if path is None:
        return cached
    destination = Path(path)
    if destination.is_dir():
        destination = destination / f"{name}.onnx"
    _atomic_write(cached.read_bytes(), destination)
    return destination
