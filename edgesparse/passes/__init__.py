"""Relax graph passes. They rewrite operators and never mention instructions."""
