"""edgesparse: compile (pruned) ONNX / PyTorch models into self-contained artifacts for edge targets."""

__version__ = "0.1.0"
