"""Ahead-of-time emission: a planned Relax main becomes C that calls kernels over one arena."""
