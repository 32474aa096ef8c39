"""Ablation (issue 12): LayerNorm placement: post-LN (BERT) vs pre-LN (final LayerNorm).

  python -m experiments.sweep --sweep=experiments/sweeps/norm_placement.py --workdir=/tmp/ablate_norm_placement
"""
BASE = "configs/pretrain.py:tiny"
GRID = {"model.norm_placement": ["post", "pre"], "seed": [0, 1, 2]}
AGGREGATE_OVER = "seed"
TITLE = "LayerNorm placement: post-LN (BERT) vs pre-LN (final LayerNorm)"
