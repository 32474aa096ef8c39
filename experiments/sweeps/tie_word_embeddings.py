"""Ablation (issue 12): MLM decoder tied to the word embeddings (BERT) or untied.

  python -m experiments.sweep --sweep=experiments/sweeps/tie_word_embeddings.py --workdir=/tmp/ablate_tie_word_embeddings
"""
BASE = "configs/pretrain.py:tiny"
GRID = {"model.tie_word_embeddings": [True, False], "seed": [0, 1, 2]}
AGGREGATE_OVER = "seed"
TITLE = "MLM decoder tied to the word embeddings (BERT) or untied"
