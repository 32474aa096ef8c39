"""Fine-tuned models loaded by the API predict what their own fine-tuning run
predicted (classification with Chinese text, NER entity spans, SQuAD answers, on local
files); the `bert_jax.predict` CLI and its errors."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import inference
from bert_jax.train import finetune
from configs import finetune_common, finetune_glue, finetune_ner, finetune_squad

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = finetune_common.minilm_dir()
VOCAB = os.path.join(MINILM, "vocab.txt")
POSITIVE, NEGATIVE = ("好", "喜欢", "棒", "great"), ("差", "讨厌", "糟", "awful")
FILLER = list("这个电影我们今天觉得非常") + ["the", "film", "was"]


def tiny(config, epochs, seq, lr=3e-3, vocab=VOCAB):
  config.init.checkpoint = ""
  config.data.vocab_path = vocab
  m = config.model
  with open(vocab, encoding="utf-8") as f:
    m.vocab_size = sum(1 for _ in f)
  m.hidden_size, m.num_heads, m.intermediate_size, m.num_layers = 32, 2, 64, 1
  config.data.max_seq_length, config.data.doc_stride = seq, 8
  config.train.global_batch_size, config.train.num_epochs = 8, float(epochs)
  config.train.learning_rate, config.train.warmup_proportion = lr, 0.0
  return config


def sentiment_rows(n, seed):
  """Chinese (and some English) sentences whose label is the sentiment word in them."""
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    label = int(rng.integers(2))
    words = list(rng.choice(FILLER, int(rng.integers(3, 12))))
    words.insert(int(rng.integers(len(words) + 1)),
                 str(rng.choice(POSITIVE if label else NEGATIVE)))
    rows.append({"text_a": "".join(w if len(w) == 1 else f" {w} " for w in words).strip(),
                 "label": label, "idx": i})
  return rows


def chinese_vocab(path):
  """A WordPiece vocab.txt of single CJK characters (as bert-base-chinese's) and words."""
  chars = sorted({c for w in POSITIVE + NEGATIVE + tuple(FILLER) for c in w
                  if ord(c) > 0x2E80})
  words = [w for w in POSITIVE + NEGATIVE + tuple(FILLER) if w.isascii()]
  path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars
                            + words) + "\n", encoding="utf-8")
  return str(path)


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                  encoding="utf-8")
  return str(path)


def test_classifier_from_its_workdir_predicts_its_own_test_file(tmp_path):
  c = tiny(finetune_glue.get_config("task=mrpc,init=none,size=tiny"), epochs=8, seq=24,
           vocab=chinese_vocab(tmp_path / "vocab.txt"))
  c.data.task, c.data.source = "jsonl", "local"
  c.data.train_file = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(96, 0))
  c.data.eval_file = write_jsonl(tmp_path / "eval.jsonl", sentiment_rows(16, 1))
  test_rows = sentiment_rows(24, 2)
  c.data.test_file = write_jsonl(tmp_path / "test.jsonl", test_rows)
  c.data.label_names = "negative,positive"   # the integer labels' names
  workdir = str(tmp_path / "run")
  finetune.train_and_evaluate(c, workdir)
  with open(os.path.join(workdir, "predictions/test/test_predictions.jsonl")) as f:
    run_preds = [json.loads(line)["prediction"] for line in f]

  tok, model = inference.load(workdir)
  got = inference.classify(model, tok, [r["text_a"] for r in test_rows], batch_size=5)
  names = ["negative", "positive"]
  assert [g["label"] for g in got] == [names[p] for p in run_preds]
  accuracy = np.mean([g["label"] == names[r["label"]] for g, r in zip(got, test_rows)])
  assert accuracy >= 0.9, accuracy   # it learned the Chinese sentiment words

  # The same through the command line.
  inp = tmp_path / "in.jsonl"
  write_jsonl(inp, [{"text": r["text_a"], "id": r["idx"]} for r in test_rows[:6]])
  out = tmp_path / "out.jsonl"
  proc = subprocess.run([sys.executable, "-m", "bert_jax.predict", f"--model={workdir}",
                         "--task=classify", f"--input={inp}", f"--output={out}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "Metadata file does not exist" not in proc.stderr   # orbax read the step right
  lines = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
  assert [(x["id"], x["label"]) for x in lines] == [
      (r["idx"], g["label"]) for r, g in zip(test_rows[:6], got[:6])]


CONLL_WORDS = {"PER": ["Merkel", "Smith"], "LOC": ["Paris", "Berlin", "Japan"],
               "ORG": ["Google", "EU"], "O": ["the", "visited", "said", "in", "of", "."]}


def write_conll(path, n, seed):
  rng = np.random.default_rng(seed)
  lines = ["-DOCSTART- -X- -X- O", ""]
  for _ in range(n):
    for _ in range(int(rng.integers(3, 14))):
      kind = str(rng.choice(list(CONLL_WORDS)))
      word = str(rng.choice(CONLL_WORDS[kind]))
      lines.append(f"{word} NN O {'O' if kind == 'O' else 'B-' + kind}")
    lines.append("")
  path.write_text("\n".join(lines) + "\n")


def test_tagger_from_its_workdir_finds_its_own_entities(tmp_path):
  data = tmp_path / "conll"
  data.mkdir()
  for name, n, seed in (("train.txt", 48, 0), ("valid.txt", 8, 1), ("test.txt", 10, 2)):
    write_conll(data / name, n, seed)
  c = tiny(finetune_ner.get_config("init=none,size=tiny"), epochs=2, seq=12)
  c.data.source, c.data.data_dir = "local", str(data)
  workdir = str(tmp_path / "run")
  finetune.train_and_evaluate(c, workdir)
  sentences = [s for s in (tmp_path / "run/predictions/test/test.conll").read_text()
               .split("\n\n") if s.strip()]
  words = [[line.split()[0] for line in s.splitlines()] for s in sentences]
  run_tags = [[line.split()[2] for line in s.splitlines()] for s in sentences]

  tok, model = inference.load(workdir)
  got = inference.tag(model, tok, words, batch_size=3)  # windows: seq 12, stride 8
  assert [g["tags"] for g in got] == run_tags
  from bert_jax import metrics
  for g, tags, ws in zip(got, run_tags, words):
    text = " ".join(ws)
    assert [(e["type"], e["text"]) for e in g["entities"]] == [
        (kind, " ".join(ws[a:b + 1])) for kind, a, b in metrics.get_entities(tags)]
    assert all(text[e["start"]:e["end"]] == e["text"] for e in g["entities"])


def squad_file(path, seed, n):
  rng = np.random.default_rng(seed)
  places = ["Paris", "Berlin", "Tokyo", "Lima", "Oslo"]
  data = []
  for i in range(n):
    place = str(rng.choice(places))
    context = (" ".join(rng.choice(["It", "was", "a", "long", "day", "and"], 6))
               + f" she lived in {place} for years ." + " the end" * int(rng.integers(1, 6)))
    data.append({"title": f"t{i}", "paragraphs": [{"context": context, "qas": [{
        "id": f"q{seed}-{i}", "question": "Where did she live?",
        "answers": [{"text": place, "answer_start": context.index(place)}]}]}]})
  path.write_text(json.dumps({"data": data, "version": "1.1"}))


def test_qa_model_from_its_workdir_gives_its_own_answers(tmp_path):
  data = tmp_path / "squad"
  data.mkdir()
  squad_file(data / "train-v1.1.json", 0, 24)
  squad_file(data / "dev-v1.1.json", 1, 8)
  c = tiny(finetune_squad.get_config("task=squad_v1.1,init=none,size=tiny"), epochs=1,
           seq=24)
  c.data.source, c.data.data_dir, c.data.max_query_length = "local", str(data), 8
  workdir = str(tmp_path / "run")
  finetune.train_and_evaluate(c, workdir)
  with open(os.path.join(workdir, "predictions/epoch_1/validation/predictions.json")) as f:
    run_answers = json.load(f)
  from bert_jax.data.tasks import squad
  dev = squad.load_json(str(data / "dev-v1.1.json"))
  tok, model = inference.load(workdir)
  got = inference.answer(model, tok, [e["question"] for e in dev],
                         [e["context"] for e in dev], batch_size=4)
  assert [g["answer"] for g in got] == [run_answers[e["id"]] for e in dev]
  assert all(e["context"][g["start"]:g["end"]] == g["answer"] for g, e in zip(got, dev))


# --------------------------------------------------------------------------- errors


def test_a_model_without_the_needed_head_is_a_clear_error(tmp_path):
  tok, model = inference.load(MINILM)
  with pytest.raises(inference.ModelError, match=r"classify needs a fine-tuned .* has "
                     r"no task head \(no task.json\)"):
    inference.classify(model, tok, ["hello"])
  with pytest.raises(inference.ModelError, match=r"fill_mask needs a trained MLM head"):
    inference.fill_mask(model, tok, ["a [MASK] b"])
  with pytest.raises(ValueError, match=r"expected at least one \[MASK\]"):
    inference.fill_mask(model, tok, ["no mask"])
  with pytest.raises(inference.ModelError, match=r"is not a directory"):
    inference.load(str(tmp_path / "missing"))
  bad = tmp_path / "bad.jsonl"
  bad.write_text('{"txt": "hello"}\n')
  proc = subprocess.run([sys.executable, "-m", "bert_jax.predict", f"--model={MINILM}",
                         "--task=embed", f"--input={bad}", f"--output={tmp_path}/o.jsonl"],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      f"predict failed: {bad}:1: expected the field 'text', found ['txt']")
  assert not os.path.exists(tmp_path / "o.jsonl")
