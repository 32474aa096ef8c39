r"""BERT pretraining (MLM + NSP).

The argument after the colon picks a size and optional short overrides:

  # The embedded demo: tiny BERT on CPython's own documentation text, ~4 min on 2 cores.
  python -m bert_jax.main --config=configs/pretrain.py:tiny --workdir=/tmp/bert_tiny

  # Prepared shards (one worker per core) with a WordPiece vocab, then train on them;
  # two sequence-length phases as the paper (90% of steps at 128, then 512):
  python -m bert_jax.data.prepare --corpus='/data/wiki/*.txt' --tokenizer=vocab.txt \
      --output_dir=/data/p128 --max_seq_length=128 --eval_fraction=0.01
  python -m bert_jax.data.prepare --corpus='/data/wiki/*.txt' --tokenizer=vocab.txt \
      --output_dir=/data/p512 --max_seq_length=512 --max_predictions_per_seq=80
  python -m bert_jax.main --config=configs/pretrain.py:base,vocab=30522 \
      --config.data.phases=0:/data/p128:20,900000:/data/p512:80 --workdir=/tmp/bert_base

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

The short-argument defaults (vocab 4096, batch 32, 1,200 steps, lr 2e-3, no dropout)
size the demo for ~2M tokens on a CPU: a run that short learns faster without dropout,
and a 4k vocabulary suits a 1.4 MB corpus. Paper settings (Devlin et al. 2019, phase 1):
`base,vocab=30522,batch=256,steps=900000,dropout=0.1` with learning_rate 1e-4.

Every field is documented where it is set; `--config.<field>=value` overrides any of
them, and a field that does not exist stops the run with its name.
"""

import ml_collections

from configs import common


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = common.parse_arg(arg, size="tiny", vocab=4096, seq=128, batch=32, steps=1200,
                       dropout=0.0, mesh="dp")
  c = ml_collections.ConfigDict()
  c.job = "pretrain"
  c.seed = 0
  c.model = common.model_config(a.size, vocab_size=a.vocab)
  c.model.hidden_dropout_prob = a.dropout
  c.model.attention_dropout_prob = a.dropout
  c.mesh = common.mesh_config(a.mesh)
  c.distributed = common.distributed_config()

  c.data = d = ml_collections.ConfigDict()
  # In-memory path: the corpus is read, tokenized and turned into examples at start-up.
  d.corpus = "embedded"           # 'embedded' (CPython docs), file globs (BERT text / .jsonl), comma-separated, or 'tfds:NAME[:SPLIT]'
  d.on_bad_utf8 = "error"         # error | skip (skipped lines are counted and logged)
  d.objective = "nsp"             # nsp (BERT) | sop (ALBERT sentence order) | none (RoBERTa full-sentence packing)
  # Pack each process's masked examples of a batch into as many rows (segment ids +
  # restarting positions; bert_jax/data/packing.py). MLM only: needs objective='none'.
  # The window is one batch and every row still runs: no compute saved by itself.
  d.packing = False
  # File-backed path: examples prepared by `python -m bert_jax.data.prepare` (tokenizer,
  # objective, lengths and masking are the prepared directory's; its manifest says which).
  d.prepared_dir = ""             # '' = build in memory from data.corpus
  d.phases = ""                   # 'STEP:DIR[:MAX_PREDICTIONS],...' e.g. '0:/p128:20,900000:/p512:80'; overrides prepared_dir
  d.loader_prefetch_threads = 2   # background threads preparing batches (file-backed loader)
  d.tokenizer_path = ""           # a SentencePiece .model or WordPiece vocab.txt; '' = train SentencePiece on the corpus (cached in workdir)
  d.tokenizer_lowercase = "auto"  # WordPiece basic tokenisation: auto (tokenizer_config.json / the vocab) | true | false
  d.tokenizer_model_type = "unigram"      # unigram | bpe (when training)
  d.tokenizer_input_sentence_size = 1_000_000  # sentences sampled to train the tokenizer
  d.max_seq_length = a.seq
  d.max_predictions_per_seq = 20  # as the paper at length 128 (80 at 512)
  d.masked_lm_prob = 0.15
  d.whole_word_masking = False
  d.whole_word_segmenter = "none"  # none | jieba: group Chinese characters into words for whole-word masking
  # Where masking departs from google-research/bert by choice (docs/design_notes.md);
  # the second value of each restores the original script's behaviour.
  d.masking_budget = "maskable"   # maskable: masked_lm_prob x maskable tokens | all_tokens: x all tokens, [CLS]/[SEP] included
  d.mask_unk = False              # True: [UNK] can be masked and predicted, as in the original
  d.random_replacement = "normal_ids"  # normal_ids: random tokens skip special ids | any_id: drawn from the whole vocab
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
  t.learning_rate = 2e-3 if a.size in ("tiny", "mini") else 1e-4
  t.init_from = ""                # a pretraining workdir: start from its newest params (fresh optimizer), e.g. a second phase
  t.optimizer = "adamw"           # adamw | lamb (You et al. 2019; same moments and decay mask)
  t.weight_decay = 0.01           # AdamW / LAMB; not applied to biases and LayerNorm
  t.adam_b1 = 0.9
  t.adam_b2 = 0.999
  t.adam_eps = 1e-6
  t.max_grad_norm = 1.0           # global-norm clipping
  t.dropout_prng_impl = "auto"  # dropout random bits: auto (rbg on TPU, threefry2x32 elsewhere) | threefry2x32 | rbg | unsafe_rbg (train/pretrain_steps.resolve_prng_impl)
  t.log_every_steps = 50
  t.eval_every_steps = 400
  t.eval_batches = 20             # batches of held-out data per evaluation (0 = all)
  t.checkpoint_every_steps = 1000  # and always at the last step and on SIGTERM
  t.checkpoint_keep = 3            # newest checkpoints kept ...
  t.checkpoint_best_metric = ""    # ... plus the best by this eval metric ('' = none),
  t.checkpoint_best_mode = "max"   # e.g. 'mlm_accuracy' with 'max', 'mlm_loss' with 'min'
  t.profile_steps = ""             # 'A,B': jax.profiler trace of steps A..B into WORKDIR/profile (benchmarks/profile_summary.py reads it); '' = off
  t.peak_tflops = 0.0              # device peak (TFLOP/s) for train/mfu; 0 = bert_jax/perf.py's table by device kind (none for CPUs: no MFU)


  # The fill-mask example printed at the end; [MASK] marks the token to predict.
  c.fill_mask_text = "The [MASK] statement leaves the current function call."
  return c
