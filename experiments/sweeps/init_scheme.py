"""Ablation (issue 12): Initialisation: BERT truncated normal 0.02 vs depth-scaled.

  python -m experiments.sweep --sweep=experiments/sweeps/init_scheme.py --workdir=/tmp/ablate_init_scheme
"""
BASE = "configs/pretrain.py:tiny"
GRID = {"model.init_scheme": ["bert", "depth_scaled"], "seed": [0, 1, 2]}
AGGREGATE_OVER = "seed"
TITLE = "Initialisation: BERT truncated normal 0.02 vs depth-scaled"
