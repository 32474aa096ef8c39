"""The sweep runner end to end: 2 activations x 2 seeds of a very short tiny pretraining.

Every point runs the real `python -m bert_jax.main` in its own workdir; the table and
plots are then checked against the runs' own files (final_eval.json, metrics.jsonl).
"""
import json
import os
import statistics
import subprocess
import sys

import matplotlib.image
import pytest

from bert_jax.data import corpora, tokenizers
from experiments import report, sweep as sweep_lib
from tests.helpers import write_embedded_corpus

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SWEEP_FILE = """
BASE = "configs/pretrain.py:tiny,vocab=600,seq=32,batch=4,steps=4"
GRID = {{"model.hidden_act": ["gelu", "relu"], "seed": [0, 1]}}
OVERRIDES = {{
    "data.corpus": {corpus!r}, "data.tokenizer_path": {tok!r}, "data.dupe_factor": 1,
    "data.eval_fraction": 0.2, "data.max_predictions_per_seq": 5,
    "model.hidden_size": 32, "model.num_heads": 2, "model.intermediate_size": 64,
    "model.num_layers": 1, "train.log_every_steps": 1, "train.eval_every_steps": 2,
    "train.eval_batches": 1, "train.checkpoint_every_steps": 100,
}}
METRICS = ["eval/mlm_accuracy", "eval/mlm_loss", "train/loss"]
CURVES = ["train/loss", "eval/mlm_loss"]
AGGREGATE_OVER = "seed"
TITLE = "activation"
"""


@pytest.fixture(scope="module")
def sweep_file(tmp_path_factory):
  root = tmp_path_factory.mktemp("sweep")
  corpus = write_embedded_corpus(root / "docs.txt", 40)
  tok = str(root / "spm.model")
  tokenizers.SentencePieceTokenizer.train(corpora.embedded_corpus()[:40], tok,
                                          vocab_size=600, input_sentence_size=20000)
  path = root / "act.py"
  path.write_text(SWEEP_FILE.format(corpus=corpus, tok=tok))
  return str(path)


def run_sweep(*args):
  return subprocess.run([sys.executable, "-m", "experiments.sweep", *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600)


def test_sweep_runs_every_point_and_reports_their_own_numbers(sweep_file, tmp_path):
  workdir = str(tmp_path / "sweep")
  proc = run_sweep(f"--sweep={sweep_file}", f"--workdir={workdir}", "--parallel=2")
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  names = ["model.hidden_act=gelu,seed=0", "model.hidden_act=gelu,seed=1",
           "model.hidden_act=relu,seed=0", "model.hidden_act=relu,seed=1"]
  assert sorted(n for n in os.listdir(workdir) if "=" in n) == names

  table = json.load(open(os.path.join(workdir, "results.json")))
  md = open(os.path.join(workdir, "results.md")).read()
  finals = {}
  for row in table["rows"]:
    run_dir = os.path.join(workdir, row["point"])
    own = json.load(open(os.path.join(run_dir, "final_eval.json")))["eval"]
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
      losses = [json.loads(line)["train/loss"] for line in f if "train/loss" in line]
    assert len(losses) == 4
    assert row["final"] == {"eval/mlm_accuracy": own["mlm_accuracy"],
                            "eval/mlm_loss": own["mlm_loss"], "train/loss": losses[-1]}
    finals[row["point"]] = row["final"]
  for group in table["groups"]:
    act = group["values"]["model.hidden_act"]
    for metric in ("eval/mlm_loss", "train/loss"):
      values = [finals[f"model.hidden_act={act},seed={s}"][metric] for s in (0, 1)]
      assert group["stats"][metric] == {"median": statistics.median(values),
                                        "min": min(values), "max": max(values), "n": 2}
    s = group["stats"]["eval/mlm_loss"]
    assert f"{s['median']:.4f} ({s['min']:.4f}, {s['max']:.4f})" in md
  # gelu and relu train differently from the same seed
  assert finals[names[0]]["train/loss"] != finals[names[2]]["train/loss"]
  for png in ("final.png", "curves.png"):
    image = matplotlib.image.imread(os.path.join(workdir, png))
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0

  # Re-running skips every finished point; a failed point is reported, the rest goes on.
  again = run_sweep(f"--sweep={sweep_file}", f"--workdir={workdir}")
  assert again.returncode == 0 and again.stdout.count("finished before, skipped") == 4


def test_failed_points_are_reported_and_the_sweep_goes_on(tmp_path):
  path = tmp_path / "bad.py"
  path.write_text('BASE = "configs/pretrain.py:tiny"\n'
                  'GRID = {"train.learnin_rate": [1.0, 2.0]}\n')
  proc = run_sweep(f"--sweep={path}", f"--workdir={tmp_path / 'w'}")
  assert proc.returncode == 1
  assert proc.stdout.count("FAILED") == 2 and "'train.learnin_rate' does not exist" in proc.stdout
  assert "2 point(s) failed" in proc.stderr


def test_dry_run_prints_one_command_per_point(tmp_path):
  sweep = sweep_lib.Sweep(base="configs/pretrain.py:tiny",
                          grid={"model.hidden_act": ["gelu", "relu"], "mesh.shape": [(2, 2, 2)]},
                          overrides={"train.num_train_steps": 10})
  lines = []
  sweep_lib.run_points(sweep, "/w", dry_run=True, echo=lines.append)
  assert lines == [
      f"{sys.executable} -m bert_jax.main --config=configs/pretrain.py:tiny "
      f"--config.train.num_train_steps=10 --config.model.hidden_act={act} "
      f"'--config.mesh.shape=(2,2,2)' '--workdir=/w/model.hidden_act={act},mesh.shape=(2,2,2)'"
      for act in ("gelu", "relu")]


def test_median_over_seeds_and_the_best_row():
  """The lr x seeds protocol: the median per lr; the best lr by the median."""
  sweep = sweep_lib.Sweep(base="b", grid={"train.learning_rate": [2e-5, 5e-5], "seed": [0, 1, 2]},
                          metrics=("eval/validation/score",), aggregate_over="seed")
  values = {(2e-5, 0): 0.70, (2e-5, 1): 0.90, (2e-5, 2): 0.72,
            (5e-5, 0): 0.75, (5e-5, 1): 0.74, (5e-5, 2): 0.10}
  rows = [{"values": {"train.learning_rate": lr, "seed": s}, "finished": True,
           "final": {"eval/validation/score": v}} for (lr, s), v in values.items()]
  groups = report.aggregate(rows, "seed", sweep.metrics)
  assert [g["stats"]["eval/validation/score"]["median"] for g in groups] == [0.72, 0.74]
  md = report.markdown(sweep, [{**r, "status": "done"} for r in rows], groups)
  assert "| 5e-05 **best** | 0.7400 (0.1000, 0.7500) | 3 |" in md


SWEEP_FILES = sorted(
    f"experiments/sweeps/{name}" for name in os.listdir(os.path.join(REPO, "experiments", "sweeps"))
    if name.endswith(".py") and name != "__init__.py")


@pytest.mark.parametrize("spec", SWEEP_FILES + [
    "experiments/sweeps/glue.py:task=mnli,size=large", "experiments/sweeps/squad.py:task=squad_v2.0"])
def test_every_sweep_file_names_fields_its_base_config_has(spec, monkeypatch):
  from bert_jax import cli
  sweep = sweep_lib.load_sweep(os.path.join(REPO, spec))
  args = sweep_lib.main_args(sweep, sweep_lib.points(sweep)[-1], "/w")[:-1]
  monkeypatch.chdir(REPO)
  problem = cli.unknown_override(args)
  assert problem is None, problem
  if sweep.paper:
    assert set(sweep.paper) <= set(sweep.metrics) and sweep.paper_source


def test_fine_tuning_results_are_read_under_their_metrics_jsonl_names(tmp_path):
  """results.json (finetune.train_and_evaluate's layout) -> 'eval/<split>/<metric>'."""
  (tmp_path / "results.json").write_text(json.dumps({
      "task": "mnli", "select_metric": "score",
      "best": {"epoch": 2, "step": 10, "train_loss": 0.5,
               "eval": {"validation_matched": {"accuracy": 0.8, "score": 0.8},
                        "validation_mismatched": {"accuracy": 0.7, "score": 0.7}}}}))
  assert report.read_final(str(tmp_path)) == {
      "eval/validation_matched/accuracy": 0.8, "eval/validation_matched/score": 0.8,
      "eval/validation_mismatched/accuracy": 0.7, "eval/validation_mismatched/score": 0.7,
      "best_epoch": 2}
