r"""BERT pretraining (MLM + NSP).

The argument after the colon picks a size and optional short overrides:

  # The embedded demo: tiny BERT on CPython's own documentation text, a few minutes on CPU.
  python -m bert_jax.main --config=configs/pretrain.py:tiny --workdir=/tmp/bert_tiny

  # BERT-base with ZeRO-3-like sharding (mesh=dp|fsdp|fsdp_tp), scanned layers with
  # remat, 4 microbatches per step:
  python -m bert_jax.main --config=configs/pretrain.py:base,mesh=fsdp \
      --config.model.scan_layers=True --config.model.remat_policy=full \
      --config.train.grad_accum_steps=4 --workdir=/tmp/bert_base_fsdp

  # Any size, longer run, other corpus (original BERT text format: one sentence per
  # line, a blank line between documents):
  python -m bert_jax.main --config=configs/pretrain.py:base,vocab=32000 \
      --config.data.corpus='/data/wiki/*.txt' --config.train.num_train_steps=1000000 \
      --workdir=/tmp/bert_base

Every field is documented where it is set; `--config.<field>=value` overrides any of
them, and a field that does not exist stops the run with its name.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, size="tiny", vocab=8192, seq=128, batch=64, steps=2500,
                        mesh="dp")
  c = ml_collections.ConfigDict()
  c.job = "pretrain"
  c.seed = 0
  c.model = common.model_config(a.size, vocab_size=a.vocab)
  c.mesh = common.mesh_config(a.mesh)
  c.distributed = common.distributed_config()

  c.data = d = ml_collections.ConfigDict()
  d.corpus = "embedded"           # 'embedded' (CPython docs text) or file glob(s), comma-separated
  d.tokenizer_path = ""           # a SentencePiece .model; '' = train one on the corpus (cached in workdir)
  d.tokenizer_model_type = "unigram"      # unigram | bpe (when training)
  d.tokenizer_input_sentence_size = 1_000_000  # sentences sampled to train the tokenizer
  d.max_seq_length = a.seq
  d.max_predictions_per_seq = 20  # as the paper at length 128 (80 at 512)
  d.masked_lm_prob = 0.15
  d.whole_word_masking = False
  d.short_seq_prob = 0.1
  d.dupe_factor = 5               # passes over the corpus with different segment splits
  d.eval_fraction = 0.05          # documents held out for evaluation

  c.train = t = ml_collections.ConfigDict()
  t.global_batch_size = a.batch
  # Microbatches per optimizer step (gradients summed in a scan inside the step); the
  # global batch must divide into grad_accum_steps x the data-parallel size.
  t.grad_accum_steps = 1
  t.num_train_steps = a.steps
  t.warmup_steps = a.steps // 10
  t.learning_rate = 1e-3 if a.size in ("tiny", "mini") else 1e-4
  t.weight_decay = 0.01           # AdamW; not applied to biases and LayerNorm
  t.adam_b1 = 0.9
  t.adam_b2 = 0.999
  t.adam_eps = 1e-6
  t.max_grad_norm = 1.0           # global-norm clipping
  t.log_every_steps = 50
  t.eval_every_steps = 500
  t.eval_batches = 20             # batches of held-out data per evaluation (0 = all)
  t.checkpoint_every_steps = 1000  # and always at the last step

  # The fill-mask example printed at the end; [MASK] marks the token to predict.
  c.fill_mask_text = "The [MASK] statement leaves the current function call."
  return c
