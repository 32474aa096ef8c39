"""Ablation (issue 12): ALBERT cross-layer sharing: none, all, attention only, FFN only.

  python -m experiments.sweep --sweep=experiments/sweeps/share_layers.py --workdir=/tmp/ablate_share_layers
"""
BASE = "configs/pretrain.py:tiny"
GRID = {"model.share_layers": ["none", "all", "attention", "ffn"], "seed": [0, 1, 2]}
AGGREGATE_OVER = "seed"
TITLE = "ALBERT cross-layer sharing: none, all, attention only, FFN only"
