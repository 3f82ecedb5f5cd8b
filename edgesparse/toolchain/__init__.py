"""C toolchain."""
