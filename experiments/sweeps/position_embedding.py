"""Ablation (issue 12): Position information: learned absolute (BERT), rotary, none.

  python -m experiments.sweep --sweep=experiments/sweeps/position_embedding.py --workdir=/tmp/ablate_position_embedding
"""
BASE = "configs/pretrain.py:tiny"
GRID = {"model.position_embedding": ["learned", "rotary", "none"], "seed": [0, 1, 2]}
AGGREGATE_OVER = "seed"
TITLE = "Position information: learned absolute (BERT), rotary, none"
