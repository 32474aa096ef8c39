r"""SQuAD fine-tuning from Google's released BERT checkpoints, as Devlin et al. 2019
(arXiv:1810.04805): v1.1 (sec. 4.2) 3 epochs, lr 5e-5, batch 32; v2.0 (sec. 4.3)
2 epochs, lr 5e-5, batch 48; length 384, doc stride 128, questions up to 64 pieces.
(google-research/bert's README runs v1.1 BERT-base with lr 3e-5 for 2 epochs: add
`lr=3e-5,epochs=2`.) Seeds x the one lr, median over seeds.

  python -m experiments.sweep --workdir=/runs/squad11_large \
      --sweep=experiments/sweeps/squad.py:task=squad_v1.1,size=large,init=hf:/ckpt/bert-large-uncased
  # data: add --override=data.tfds_download=True (tfds, fetched once) or
  # --override=data.source=local --override=data.data_dir=/data/... (the original files)

Paper (dev EM / F1): v1.1 BERT-base 80.8 / 88.5, BERT-large 84.1 / 90.9 (Table 2);
v2.0 BERT-large 78.7 / 81.9 (Table 3; no BERT-base figure). v2.0 predicts "no answer"
by a threshold on the null score: the sweep reports `f1` at data.null_score_diff_threshold
and `best_f1` with the threshold tuned on dev, as the paper tuned it.
"""

from experiments import recipes

# (task, size): {metric: paper number}
PAPER = {
    ("squad_v1.1", "base"): {"exact_match": 80.8, "f1": 88.5},
    ("squad_v1.1", "large"): {"exact_match": 84.1, "f1": 90.9},
    ("squad_v2.0", "large"): {"exact": 78.7, "f1": 81.9},
}
RECIPE = {"squad_v1.1": dict(epochs=3.0, batch=32, lr=5e-5),
          "squad_v2.0": dict(epochs=2.0, batch=48, lr=5e-5)}


def get_sweep(arg):
  a = recipes.parse(arg, task="squad_v1.1", size="base", init="minilm", seeds="3",
                    lr="", epochs="")
  if a["task"] not in RECIPE:
    raise ValueError(f"sweep argument task={a['task']!r} is not one of {sorted(RECIPE)}")
  r = RECIPE[a["task"]]
  names = ("exact_match", "f1") if a["task"] == "squad_v1.1" else ("exact", "f1", "best_f1")
  metrics = [f"eval/validation/{m}" for m in names]
  paper = PAPER.get((a["task"], a["size"]), {})
  return {
      "base": f"configs/finetune_squad.py:task={a['task']},size={a['size']},init={a['init']}",
      "grid": {"train.learning_rate": [float(a["lr"] or r["lr"])],
               "seed": list(range(int(a["seeds"])))},
      "overrides": {"train.global_batch_size": r["batch"],
                    "train.num_epochs": float(a["epochs"] or r["epochs"]),
                    "data.max_seq_length": 384, "data.doc_stride": 128,
                    "data.max_query_length": 64},
      "metrics": metrics, "select": "eval/validation/f1", "curves": ["train/loss"],
      "aggregate_over": "seed", "title": f"{a['task']} (BERT-{a['size']})",
      "paper": {f"eval/validation/{m}": v for m, v in paper.items()},
      "paper_source": "Devlin et al. 2019, dev, Table 2" if a["task"] == "squad_v1.1"
                      else "Devlin et al. 2019, dev, Table 3",
  }
