r"""GLUE fine-tuning from Google's released BERT checkpoints, as Devlin et al. 2019
(arXiv:1810.04805, sec. 4.1): batch 32, 3 epochs, lr picked on dev among {5e-5, 4e-5,
3e-5, 2e-5}, max length 128; here with 5 seeds per lr and the median per lr (the
paper reports the best of random restarts for BERT-large on small sets).

  python -m bert_jax.convert --src=/ckpt/uncased_L-12_H-768_A-12 --dst=/ckpt/bert-base-uncased --to=hf
  python -m experiments.sweep --workdir=/runs/glue_rte_base \
      --sweep=experiments/sweeps/glue.py:task=rte,size=base,init=hf:/ckpt/bert-base-uncased
  # data: add --override=data.tfds_download=True (tfds, fetched once) or
  # --override=data.source=local --override=data.data_dir=/data/... (the original files)

Tasks: cola sst2 mrpc stsb qqp mnli qnli rte wnli. The paper's number beside the row
(`PAPER`): dev where the paper gives one (Table 5: BERT-base QNLI; Table 6: MNLI-m,
MRPC, SST-2 for base and large), else the GLUE test server's (Table 1; submit
`<point>/predictions/test/*.tsv`). The paper leaves WNLI out (majority class, 65.1).
"""

from experiments import recipes

# task: (selection metric, {size: (paper number in the metric's unit, where)})
TASKS = {
    "cola": ("matthews_corrcoef", {"base": (0.521, "test, Table 1"),
                                   "large": (0.605, "test, Table 1")}),
    "sst2": ("accuracy", {"base": (0.929, "dev, Table 6"), "large": (0.937, "dev, Table 6")}),
    "mrpc": ("accuracy", {"base": (0.867, "dev, Table 6"), "large": (0.878, "dev, Table 6")}),
    "stsb": ("spearman", {"base": (0.858, "test, Table 1"), "large": (0.865, "test, Table 1")}),
    "qqp": ("f1", {"base": (0.712, "test, Table 1"), "large": (0.721, "test, Table 1")}),
    "mnli": ("accuracy", {"base": (0.844, "dev, Table 6"), "large": (0.866, "dev, Table 6")}),
    "qnli": ("accuracy", {"base": (0.884, "dev, Table 5"), "large": (0.927, "test, Table 1")}),
    "rte": ("accuracy", {"base": (0.664, "test, Table 1"), "large": (0.701, "test, Table 1")}),
    "wnli": ("accuracy", {}),
}
LEARNING_RATES = [5e-5, 4e-5, 3e-5, 2e-5]


def get_sweep(arg):
  a = recipes.parse(arg, task="rte", size="base", init="minilm", seeds="5")
  if a["task"] not in TASKS:
    raise ValueError(f"sweep argument task={a['task']!r} is not one of {sorted(TASKS)}")
  metric, paper = TASKS[a["task"]]
  split = "validation_matched" if a["task"] == "mnli" else "validation"
  key = f"eval/{split}/{metric}"
  value, where = paper.get(a["size"], (None, ""))
  return {
      "base": f"configs/finetune_glue.py:task={a['task']},size={a['size']},init={a['init']}",
      "grid": {"train.learning_rate": LEARNING_RATES, "seed": list(range(int(a["seeds"])))},
      "overrides": {"train.global_batch_size": 32, "train.num_epochs": 3.0,
                    "data.max_seq_length": 128},
      "metrics": [key], "curves": ["train/loss", key], "aggregate_over": "seed",
      "title": f"GLUE {a['task']} (BERT-{a['size']}): lr x seeds",
      "paper": {} if value is None else {key: value},
      "paper_source": f"Devlin et al. 2019, {where}" if where else "",
  }
