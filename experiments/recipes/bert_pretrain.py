r"""BERT-base / BERT-large pretraining as Devlin et al. 2019 (arXiv:1810.04805, sec. 3.1
and appendix A.2): batch 256 sequences, 1,000,000 steps, the first 90% at length 128
(20 predictions) and the last 10% at length 512 (80 predictions), Adam(W) lr 1e-4,
b1 0.9, b2 0.999, weight decay 0.01, warmup 10,000 steps then linear decay, dropout 0.1,
GELU, uncased WordPiece vocabulary of 30,522.

  python -m bert_jax.data.prepare --corpus='/data/wiki_books/*.txt' --tokenizer=vocab.txt \
      --output_dir=/data/p128 --max_seq_length=128 --max_predictions_per_seq=20
  python -m bert_jax.data.prepare --corpus='/data/wiki_books/*.txt' --tokenizer=vocab.txt \
      --output_dir=/data/p512 --max_seq_length=512 --max_predictions_per_seq=80
  python -m bert_jax.main --workdir=gs://BUCKET/bert_base \
      --config=experiments/recipes/bert_pretrain.py:size=base,p128=/data/p128,p512=/data/p512
  # on a pod: python -m launch.tpu_pod --name=... --zone=... --accelerator=v4-32 -- <the same>
  # check it there first, from any host: python -m bert_jax.aot --config=<the same> --topology=v4-32

The pod slice each size is meant for (TOPOLOGY): the paper trained BERT-base on 4 Cloud
TPUs (16 chips) and BERT-large on 16 (64 chips); here the v4 slices of as many chips,
v4-32 and v4-128 (tests/test_recipes.py compiles both phases there and checks they
fit; docs/benchmarks.md has the figures).

Paper figures (the released checkpoints fine-tuned): see experiments/sweeps/glue.py and
squad.py. The sizes are configs/common.py SIZES; layers are scanned (flat compile time).
"""

import ml_collections

from configs import pretrain
from experiments import recipes

STEPS = 1_000_000
PHASE2_START = 900_000   # 90% of the steps at length 128, the rest at 512
TOPOLOGY = {"base": "v4-32", "large": "v4-128"}   # Cloud TPU accelerator type per size


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = recipes.parse(arg, size="base", p128="/data/p128", p512="/data/p512")
  c = pretrain.get_config(f"{args['size']},vocab=30522,seq=128,batch=256,steps={STEPS},dropout=0.1")
  c.model.scan_layers = True
  c.data.max_predictions_per_seq = 20
  c.data.phases = f"0:{args['p128']}:20,{PHASE2_START}:{args['p512']}:80"
  t = c.train
  t.optimizer = "adamw"
  t.learning_rate = 1e-4
  t.warmup_steps = 10_000
  t.weight_decay = 0.01
  t.adam_b1, t.adam_b2, t.adam_eps = 0.9, 0.999, 1e-6
  t.log_every_steps = 1000
  t.eval_every_steps = 50_000
  t.checkpoint_every_steps = 10_000
  return c
