"""edgesparse: compile (pruned) ONNX / PyTorch models into self-contained artifacts for edge targets.

    import edgesparse
    res = edgesparse.compile("mobilenet_v1.onnx", target="arm64", out_dir="out/mbv1-arm64")
    res = edgesparse.compile(torch_module, target="wasm32", example_inputs=(x,), out_dir="out/m")
"""

__version__ = "0.1.0"

__all__ = ["compile", "verify", "bench", "run_artifact", "EdgesparseError"]


def __getattr__(name):
    # Lazy: importing TVM takes seconds, and `edgesparse targets` or `zoo list` need none of it.
    if name == "compile":
        from .compiler import compile

        return compile
    if name == "verify":
        from .harness.verify import verify

        return verify
    if name == "bench":
        from .harness.bench import bench

        return bench
    if name == "run_artifact":
        from .harness.run import run_artifact

        return run_artifact
    if name == "EdgesparseError":
        from .errors import EdgesparseError

        return EdgesparseError
    raise AttributeError(name)
