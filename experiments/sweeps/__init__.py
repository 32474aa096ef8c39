"""Sweep files for `python -m experiments.sweep --sweep=experiments/sweeps/X.py[:ARG]`."""
