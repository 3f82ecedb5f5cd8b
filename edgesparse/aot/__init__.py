"""aot stage."""
