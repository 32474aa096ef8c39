r"""Fine-tuning sweep: learning rates x seeds, the median per learning rate, a table.

The paper's protocol (Devlin et al. 2019, section 4.1 and appendix A.3): fine-tune with
each lr in {2e-5, 3e-5, 5e-5}, pick the lr by dev score; as papers do since, run
several seeds per lr and report the median (BERT-large was unstable on small sets).

  python -m experiments.sweep --config=configs/finetune_glue.py:task=rte \
      --workdir=/tmp/sweep_rte --lrs=2e-5,3e-5,5e-5 --seeds=0,1,2,3,4 \
      [--config.data.source=local --config.data.data_dir=/data/glue ...]

Each run lands in WORKDIR/lr=<lr>,seed=<seed>/ (re-running skips finished runs, so a
killed sweep resumes). The table goes to WORKDIR/results.md and WORKDIR/results.json:
per lr the median, min and max of the selection metric over seeds (each run's best
epoch), and the lr with the best median.
"""

from __future__ import annotations

import json
import os
import statistics
from typing import Sequence

from absl import app, flags
from ml_collections import config_flags

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Only when run as a script: importing this module must not claim --config."""
  config_flags.DEFINE_config_file("config", None, "A fine-tuning config file",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Sweep directory (one sub-directory per run)")
  flags.DEFINE_list("lrs", ["2e-5", "3e-5", "5e-5"], "Learning rates")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds")
  flags.mark_flags_as_required(["config", "workdir"])


def run_name(lr: float, seed: int) -> str:
  return f"lr={lr:g},seed={seed}"


def summarize(runs: Sequence[dict]) -> dict:
  """runs: [{'lr', 'seed', 'select_metric', 'best': results['best']}] -> the table."""
  if not runs:
    raise ValueError("no finished runs to summarize")
  metric = runs[0]["select_metric"]
  by_lr: dict[float, list] = {}
  for r in runs:
    split = next(iter(r["best"]["eval"]))
    by_lr.setdefault(r["lr"], []).append(
        {"seed": r["seed"], "epoch": r["best"]["epoch"], "value": r["best"]["eval"][split][metric],
         "all": r["best"]["eval"]})
  rows = []
  for lr in sorted(by_lr):
    values = [x["value"] for x in by_lr[lr]]
    rows.append({"lr": lr, "median": statistics.median(values), "min": min(values),
                 "max": max(values), "seeds": len(values), "runs": by_lr[lr]})
  best = max(rows, key=lambda r: r["median"])
  return {"metric": metric, "rows": rows, "best_lr": best["lr"], "best_median": best["median"]}


def markdown(table: dict, title: str) -> str:
  lines = [f"## {title}", "",
           f"Selection metric: `{table['metric']}` (best epoch of each run, first eval split)",
           "", "| lr | median | min | max | seeds |", "|---|---|---|---|---|"]
  for r in table["rows"]:
    mark = " **best**" if r["lr"] == table["best_lr"] else ""
    lines.append(f"| {r['lr']:g}{mark} | {100 * r['median']:.2f} | {100 * r['min']:.2f} | "
                 f"{100 * r['max']:.2f} | {r['seeds']} |")
  return "\n".join(lines) + "\n"


def main(argv):
  del argv
  from bert_jax.train import finetune
  base = FLAGS.config
  runs = []
  for lr in (float(x) for x in FLAGS.lrs):
    for seed in (int(s) for s in FLAGS.seeds):
      workdir = os.path.join(FLAGS.workdir, run_name(lr, seed))
      done = os.path.join(workdir, "results.json")
      if os.path.exists(done):
        with open(done, encoding="utf-8") as f:
          result = json.load(f)
      else:
        config = base.copy_and_resolve_references()
        with config.unlocked():
          config.train.learning_rate, config.seed = lr, seed
        result = finetune.train_and_evaluate(config, workdir)
      runs.append({"lr": lr, "seed": seed, "select_metric": result["select_metric"],
                   "best": result["best"]})
  table = summarize(runs)
  with open(os.path.join(FLAGS.workdir, "results.json"), "w", encoding="utf-8") as f:
    json.dump(table, f, indent=2)
  text = markdown(table, f"{base.data.task}: lr x seeds sweep")
  with open(os.path.join(FLAGS.workdir, "results.md"), "w", encoding="utf-8") as f:
    f.write(text)
  print(text)


if __name__ == "__main__":
  define_flags()
  app.run(main)
