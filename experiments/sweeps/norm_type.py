"""Ablation (issue 12): LayerNorm vs RMSNorm.

  python -m experiments.sweep --sweep=experiments/sweeps/norm_type.py --workdir=/tmp/ablate_norm_type
"""
BASE = "configs/pretrain.py:tiny"
GRID = {"model.norm_type": ["layernorm", "rmsnorm"], "seed": [0, 1, 2]}
AGGREGATE_OVER = "seed"
TITLE = "LayerNorm vs RMSNorm"
