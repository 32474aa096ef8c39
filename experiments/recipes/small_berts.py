r"""The 24 small BERTs of Turc et al. 2019, "Well-Read Students Learn Better: On the
Importance of Pre-training Compact Models" (arXiv:1908.08962; released in
google-research/bert): L in {2, 4, 6, 8, 10, 12} layers x H in {128, 256, 512, 768},
H/64 heads, feed-forward 4H, pretrained with the standard BERT recipe (the release's
words; here experiments/recipes/bert_pretrain.py's: batch 256, 1M steps, 128 then 512).

  python -m bert_jax.main --workdir=/tmp/bert_L4_H256 \
      --config=experiments/recipes/small_berts.py:L=4,H=256,p128=/data/p128,p512=/data/p512

Named sizes: L2/H128 BERT-Tiny, L4/H256 BERT-Mini, L4/H512 BERT-Small, L8/H512
BERT-Medium, L12/H768 BERT-Base. Their GLUE test scores (release README, after the
best of batch {8, 16, 32, 64, 128} x lr {3e-4, 1e-4, 5e-5, 3e-5}, 4 epochs): Tiny 64.2,
Mini 65.8, Small 71.2, Medium 73.5 (GLUE score).

The pod slice (TOPOLOGY): a v5e-8 (8 chips, 16 GiB each), 32 sequences per chip.
At length 512 the largest sizes need `model.remat_policy=dots` (keep the matmul
outputs, recompute the elementwise work): measured with libtpu 0.0.42.1, L=12,H=768
needs 23.6 GiB of temporaries per chip without remat and 10.7 GiB in all with `dots`
(L=6,H=768 fits without, 13.2 GiB). The recipe sets it for every size, one program
for all 24.
tests/test_recipes.py compiles the smallest and the largest there and checks they fit.
"""

import ml_collections

from experiments import recipes
from experiments.recipes import bert_pretrain

TOPOLOGY = "v5e-8"   # Cloud TPU accelerator type
LAYERS = (2, 4, 6, 8, 10, 12)
HIDDEN = (128, 256, 512, 768)
NAMED = {(2, 128): "tiny", (4, 256): "mini", (4, 512): "small", (8, 512): "medium",
         (12, 768): "base"}
# Every (layers, hidden) of the paper, as model overrides.
SIZES = {(l, h): {"num_layers": l, "hidden_size": h, "num_heads": h // 64,
                  "intermediate_size": 4 * h} for l in LAYERS for h in HIDDEN}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  args = recipes.parse(arg, L="4", H="256", p128="/data/p128", p512="/data/p512")
  size = (int(args["L"]), int(args["H"]))
  if size not in SIZES:
    raise ValueError(f"config arguments L={size[0]},H={size[1]}: expected L in {LAYERS} "
                     f"and H in {HIDDEN}")
  c = bert_pretrain.get_config(f"size=base,p128={args['p128']},p512={args['p512']}")
  for field, value in SIZES[size].items():
    c.model[field] = value
  c.model.remat_policy = "dots"   # length 512 on 16 GiB chips (docstring)
  return c
