"""Lowering: Relax operators to fused TIR kernels over a statically planned memory, and kernels to code."""
