"""Ablation (issue 12): Biases in the projections on / off.

  python -m experiments.sweep --sweep=experiments/sweeps/use_bias.py --workdir=/tmp/ablate_use_bias
"""
BASE = "configs/pretrain.py:tiny"
GRID = {"model.use_bias": [True, False], "seed": [0, 1, 2]}
AGGREGATE_OVER = "seed"
TITLE = "Biases in the projections on / off"
