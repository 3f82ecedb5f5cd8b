"""Harness: run an artifact on a device, verify it against ONNX Runtime, benchmark it."""
