"""Ablation (issue 12): ALBERT factorised embeddings: embedding size = hidden (0) vs 64.

  python -m experiments.sweep --sweep=experiments/sweeps/embedding_size.py --workdir=/tmp/ablate_embedding_size
"""
BASE = "configs/pretrain.py:tiny"
GRID = {"model.embedding_size": [0, 64], "seed": [0, 1, 2]}
AGGREGATE_OVER = "seed"
TITLE = "ALBERT factorised embeddings: embedding size = hidden (0) vs 64"
