r"""BERT-large with LAMB at batch 64k / 32k: You et al. 2019, "Large Batch Optimization for
Deep Learning: Training BERT in 76 minutes" (arXiv:1904.00962, sec. 4.1, Table 1): the
mixed-batch run, 8,599 iterations in two phases, SQuAD v1.1 dev F1 90.58 after
fine-tuning (BERT baseline 90.395). The per-phase figures are those of NVIDIA's
reproduction of the paper, DeepLearningExamples PyTorch/LanguageModeling/BERT
`scripts/run_pretraining.sh`:
  phase 1: batch 65,536 at length 128 (20 predictions), 7,038 steps, lr 6e-3,
           warmup 28.43% (2,000 steps);
  phase 2: batch 32,768 at length 512 (80 predictions), 1,563 steps, lr 4e-3,
           warmup 12.8% (200 steps), starting from phase 1's weights.
LAMB b1 0.9, b2 0.999, eps 1e-6, weight decay 0.01 (not on biases and LayerNorm),
linear decay after warmup, gradient clipping at 1.0. The batch is reached with
`train.grad_accum_steps` (NVIDIA: 8 GPUs x 64 microbatches of 128); pick it so one
microbatch fits the devices.

  python -m bert_jax.main --workdir=gs://BUCKET/lamb_p1 \
      --config=experiments/recipes/lamb_pretrain.py:phase=1,data=/data/p128,accum=64
  python -m bert_jax.main --workdir=gs://BUCKET/lamb_p2 \
      --config=experiments/recipes/lamb_pretrain.py:phase=2,data=/data/p512,accum=128,init=gs://BUCKET/lamb_p1

The pod slice (TOPOLOGY): v4-256 (128 chips), where the default accumulation gives 8
sequences per chip per microbatch in phase 1 and 2 in phase 2 (tests/test_recipes.py
compiles both phases there and checks they fit). The paper ran 1,024 TPUv3 chips; on a
slice that large lower `accum` (e.g. 16 / 32 on v4-1024) so that each microbatch still
splits over every chip.
"""

import ml_collections

from configs import pretrain
from experiments import recipes

# phase: (global batch, length, predictions, steps, lr, warmup steps)
TOPOLOGY = "v4-256"   # Cloud TPU accelerator type (128 chips)
PHASES = {
    1: (65_536, 128, 20, 7_038, 6e-3, 2_000),
    2: (32_768, 512, 80, 1_563, 4e-3, 200),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = recipes.parse(arg, phase="1", data="/data/p128", accum="64", init="", size="large")
  phase = int(args["phase"])
  if phase not in PHASES:
    raise ValueError(f"config argument phase={phase} is not one of {sorted(PHASES)}")
  batch, length, predictions, steps, lr, warmup = PHASES[phase]
  c = pretrain.get_config(
      f"{args['size']},vocab=30522,seq={length},batch={batch},steps={steps},dropout=0.1")
  c.model.scan_layers = True
  c.data.prepared_dir = args["data"]
  c.data.max_predictions_per_seq = predictions
  t = c.train
  t.optimizer = "lamb"
  t.learning_rate = lr
  t.warmup_steps = warmup
  t.weight_decay = 0.01
  t.adam_b1, t.adam_b2, t.adam_eps = 0.9, 0.999, 1e-6
  t.grad_accum_steps = int(args["accum"])
  t.init_from = args["init"]
  t.log_every_steps = 10
  t.eval_every_steps = 1000
  t.checkpoint_every_steps = 200
  return c
