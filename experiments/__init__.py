"""Reproduction and ablation sweeps (see experiments/sweep.py)."""
