"""Ablation (issue 12): Feed-forward activation: GELU (erf, tanh), ReLU, GeGLU, SwiGLU.

  python -m experiments.sweep --sweep=experiments/sweeps/hidden_act.py --workdir=/tmp/ablate_hidden_act
"""
BASE = "configs/pretrain.py:tiny"
GRID = {"model.hidden_act": ["gelu", "gelu_new", "relu", "geglu", "swiglu"], "seed": [0, 1, 2]}
AGGREGATE_OVER = "seed"
TITLE = "Feed-forward activation: GELU (erf, tanh), ReLU, GeGLU, SwiGLU"
