"""HF task models in (issue 21): transformers-saved `BertFor...` dirs load in the
inference API, `predict` and fine-tuning, and agree with transformers' own pipelines;
word boundaries equal BERT's pre-tokenizer; fine-tuned workdirs round-trip through HF.

Every reference here is transformers (its models, pipelines and tokenizers), never an
output bert_jax saved earlier.
"""
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers

from bert_jax import convert, inference
from bert_jax.data.tasks import words
from configs import finetune_common

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM = finetune_common.minilm_dir()
NER = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"]
TEXTS = ["Prices rose 12.5% to $1,200 in Paris.", "see https://example.com/a?b=c&d=e~f now",
         "a+b=c and x^2 | y < z > w", "Angela Merkel visited 北京 and Berlin yesterday",
         "the quick brown fox (jumps) over [the] lazy dog!", "email: bob@mail.org #tag",
         "don't stop; 3.14 <= pi", "Zürich café déjà vu naïve"]
SMALL = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=64, max_position_embeddings=128)


def hf_model(cls, seed, **config):
  """A tiny random transformers model; its head scaled up so predictions are decided
  by clear margins (not by float noise between torch and XLA)."""
  torch.manual_seed(seed)
  model = cls(transformers.BertConfig(**SMALL, **config)).eval()
  head = getattr(model, "classifier", None) or getattr(model, "qa_outputs", None)
  if head is not None:
    with torch.no_grad():
      head.weight.normal_(0, 3.0)
      head.bias.normal_(0, 0.5)
  return model


def save(model, directory):
  model.save_pretrained(directory)
  transformers.AutoTokenizer.from_pretrained(MINILM).save_pretrained(directory)
  return str(directory)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
  root = tmp_path_factory.mktemp("hf_task_models")
  three = {"id2label": {0: "negative", 1: "neutral", 2: "positive"},
           "label2id": {"negative": 0, "neutral": 1, "positive": 2}}
  specs = {
      "classification": (transformers.BertForSequenceClassification, three),
      "multilabel": (transformers.BertForSequenceClassification,
                     {"num_labels": 4, "problem_type": "multi_label_classification"}),
      "regression": (transformers.BertForSequenceClassification,
                     {"num_labels": 1, "problem_type": "regression"}),
      "token": (transformers.BertForTokenClassification,
                {"id2label": dict(enumerate(NER)),
                 "label2id": {n: i for i, n in enumerate(NER)}}),
      "span": (transformers.BertForQuestionAnswering, {}),
      "mlm": (transformers.BertForMaskedLM, {}),
  }
  return {kind: save(hf_model(cls, i, **config), root / kind)
          for i, (kind, (cls, config)) in enumerate(specs.items())}


def hf_pipeline(task, directory):
  model_cls = {"text-classification": transformers.AutoModelForSequenceClassification,
               "token-classification": transformers.AutoModelForTokenClassification,
               "question-answering": transformers.AutoModelForQuestionAnswering,
               "fill-mask": transformers.AutoModelForMaskedLM}[task]
  model = model_cls.from_pretrained(directory).eval()
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  return transformers.pipeline(task, model=model, tokenizer=tok, device="cpu")


# ------------------------------------------------------------- word boundaries


def fast_pre_tokenizer_spans(text, lowercase):
  """Word spans of the `tokenizers` BERT normalizer + pre-tokenizer (what fast BERT
  tokenizers, and so transformers' pipelines, split words by)."""
  from tokenizers import PreTokenizedString, normalizers, pre_tokenizers
  norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                    strip_accents=lowercase, lowercase=lowercase)
  pts = PreTokenizedString(text)
  pts.normalize(lambda n: norm.normalize(n))
  pre_tokenizers.BertPreTokenizer().pre_tokenize(pts)
  return [o for _, o, _ in pts.get_splits(offset_referential="original",
                                           offset_type="char")]


def test_word_boundaries_are_berts_basic_tokenizer():
  from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer
  rng = random.Random(0)
  pool = ([chr(i) for i in range(32, 0x250)] + list("北京天気\u3000\t\n\x01\x00\ufffd≠≮"
                                                     "\u0301ー・「」€£\u200b\u00ad")
          + [chr(0x20000), chr(0x2A700), chr(0x2CEA0)])
  texts = TEXTS + ["".join(rng.choice(pool) for _ in range(rng.randint(1, 14)))
                   for _ in range(3000)]
  basic = BasicTokenizer(do_lower_case=False)
  for text in TEXTS:   # the words themselves, as BERT's own BasicTokenizer gives them
    assert [text[s:e] for s, e in words.word_spans(text)] == basic.tokenize(text), text
  for lowercase in (False, True):
    for text in texts:   # the spans, as the fast tokenizer's offsets give them
      assert words.word_spans(text, lowercase) == fast_pre_tokenizer_spans(
          text, lowercase), (lowercase, repr(text))
  spans = words.word_spans("Prices rose 12.5% to $1,200")
  assert ["Prices rose 12.5% to $1,200"[s:e] for s, e in spans][-4:] == [
      "$", "1", ",", "200"]


def test_sentencepiece_tagging_uses_the_same_words(tmp_path):
  """With a SentencePiece model, `tag`'s words are BERT's too: each is encoded on its
  own and tagged by its first piece (checked against the model run by hand)."""
  import flax.linen as nn
  import jax
  from bert_jax.config import ModelConfig
  from bert_jax.data import tokenizers
  from bert_jax.models import make_task_model
  from tests import inference_helpers
  spm_path = str(tmp_path / "spm.model")
  spm = tokenizers.SentencePieceTokenizer.train([[t] for t in TEXTS * 20], spm_path, 350)
  cfg = ModelConfig(vocab_size=spm.vocab_size, hidden_size=32, num_layers=1, num_heads=2,
                    intermediate_size=64, max_position_embeddings=64)
  model = make_task_model("token", cfg, len(NER))
  dummy = np.zeros((1, 8), np.int32)
  params = jax.tree_util.tree_map(np.array, nn.meta.unbox(
      model.init(jax.random.PRNGKey(0), dummy, dummy, dummy)["params"]))
  params["classifier"]["kernel"] *= 100
  workdir = inference_helpers.write_finetune_workdir(
      tmp_path / "run", params, cfg, {"task": "conll2003", "kind": "token",
                                      "label_names": NER, "max_seq_length": 64}, spm_path)
  tok, loaded = inference.load(workdir)
  got = inference.tag(loaded, tok, TEXTS[:3])
  for text, g in zip(TEXTS, got):
    spans = words.word_spans(text)
    assert g["words"] == [text[a:b] for a, b in spans]
    ids, firsts = [spm.cls_id], []
    for w in g["words"]:
      firsts.append(len(ids))
      ids += spm.encode(w)
    ids = np.array([ids + [spm.sep_id]], np.int32)
    logits = model.apply({"params": params}, ids, np.zeros_like(ids),
                         np.ones_like(ids))["logits"][0]
    assert g["tags"] == [NER[int(np.argmax(logits[i]))] for i in firsts], text


# ------------------------------------------------ acceptance 1: pipelines agree


@pytest.mark.parametrize("kind", ["classification", "multilabel", "regression"])
def test_sequence_heads_equal_the_transformers_pipeline(dirs, kind):
  tok, model = inference.load(dirs[kind])
  assert model.kind == kind and model.source.task["architecture"] == (
      "BertForSequenceClassification")
  got = inference.classify(model, tok, TEXTS, batch_size=3)
  want = hf_pipeline("text-classification", dirs[kind])(TEXTS, top_k=None)
  for g, w in zip(got, want):
    if kind == "regression":
      assert len(w) == 1
      np.testing.assert_allclose(g["value"], w[0]["score"], atol=1e-4)
      continue
    assert set(g["scores"]) == {x["label"] for x in w}
    for x in w:
      np.testing.assert_allclose(g["scores"][x["label"]], x["score"], atol=1e-4)
    if kind == "classification":
      assert g["label"] == w[0]["label"]
      assert model.label_names == ["negative", "neutral", "positive"]
    else:
      assert set(g["labels"]) == {x["label"] for x in w if x["score"] >= 0.5}


def test_token_head_tags_equal_aggregation_first(dirs):
  tok, model = inference.load(dirs["token"])
  assert model.kind == "token" and model.label_names == NER
  assert "bert/pooler" in model.initialised   # HF token models have no pooler
  got = inference.tag(model, tok, TEXTS, batch_size=3)
  want = hf_pipeline("token-classification", dirs["token"])(
      TEXTS, aggregation_strategy="first")
  total = 0
  for text, g, w in zip(TEXTS, got, want):
    ours = [(e["type"], e["start"], e["end"], e["text"]) for e in g["entities"]]
    theirs = [(e["entity_group"], e["start"], e["end"], text[e["start"]:e["end"]])
              for e in w]
    assert ours == theirs, text
    total += len(ours)
  assert total >= 10   # the random head tags plenty, so the comparison bites
  # the words of the $-, URL- and a+b=c texts are BERT's
  assert got[0]["words"][-7:] == ["$", "1", ",", "200", "in", "Paris", "."]
  assert got[2]["words"][:5] == ["a", "+", "b", "=", "c"]


def test_qa_head_answers_equal_the_transformers_pipeline(dirs):
  questions = ["Who visited Paris?", "What did prices do?", "Where is the dog?",
               "When?", "How much?"]
  contexts = ["Angela Merkel visited Paris in May.", "Prices rose 12.5% to $1,200.",
              "The lazy dog sleeps under the old oak tree.",
              "It happened on 3 June 2021, late at night.",
              "It costs 40 dollars, or 35 euros."]
  tok, model = inference.load(dirs["span"])
  assert model.kind == "span"
  got = inference.answer(model, tok, questions, contexts, max_answer_length=30)
  for q, c, g in zip(questions, contexts, got):
    w = transformers_qa(dirs["span"], q, c, max_answer_len=30)
    assert (g["answer"], g["start"], g["end"]) == (w["answer"], w["start"], w["end"]), q


def transformers_qa(directory, question, context, max_answer_len):
  """transformers 4's `question-answering` pipeline (gone from transformers 5) on one
  window: the transformers model's start/end logits over the context tokens (others
  masked), the best span by p(start) * p(end) with start <= end < start +
  max_answer_len, its characters by the fast tokenizer's offsets."""
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  model = transformers.AutoModelForQuestionAnswering.from_pretrained(directory).eval()
  enc = tok(question, context, return_offsets_mapping=True, return_tensors="pt")
  offsets = enc.pop("offset_mapping")[0].tolist()
  with torch.no_grad():
    out = model(**enc)
  context_tokens = np.array([s == 1 for s in enc.sequence_ids(0)])
  def probs(logits):
    x = np.where(context_tokens, logits[0].numpy(), -10000.0)
    x = np.exp(x - x.max())
    return x / x.sum()
  outer = np.triu(np.tril(np.outer(probs(out.start_logits), probs(out.end_logits)),
                          max_answer_len - 1))
  start, end = np.unravel_index(np.argmax(outer), outer.shape)
  a, b = offsets[start][0], offsets[end][1]
  return {"answer": context[a:b], "start": a, "end": b, "score": float(outer[start, end])}


def test_mlm_head_fills_masks_as_the_transformers_pipeline(dirs):
  texts = ["the cat sat on the [MASK] .", "paris is the [MASK] of france ."]
  tok, model = inference.load(dirs["mlm"])
  assert model.kind == "pretraining" and "mlm" not in model.initialised
  got = inference.fill_mask(model, tok, texts, top_k=5)
  fill = hf_pipeline("fill-mask", dirs["mlm"])
  for text, g in zip(texts, got):
    w = fill(text, top_k=5)
    assert [x["token_id"] for x in g[0]] == [x["token"] for x in w]
    assert [x["token"] for x in g[0]] == [x["token_str"] for x in w]
    np.testing.assert_allclose([x["probability"] for x in g[0]],
                               [x["score"] for x in w], atol=1e-4)


def run_predict(model_dir, task, rows, tmp_path):
  inp, out = tmp_path / f"{task}_in.jsonl", tmp_path / f"{task}_out.jsonl"
  inp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  proc = subprocess.run([sys.executable, "-m", "bert_jax.predict", f"--model={model_dir}",
                         f"--task={task}", f"--input={inp}", f"--output={out}"],
                        cwd=REPO, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-2000:]
  return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_predict_cli_reads_an_hf_token_model(dirs, tmp_path):
  lines = run_predict(dirs["token"], "tag", [{"text": t, "id": i}
                                             for i, t in enumerate(TEXTS[:4])], tmp_path)
  want = hf_pipeline("token-classification", dirs["token"])(
      TEXTS[:4], aggregation_strategy="first")
  assert [x["id"] for x in lines] == [0, 1, 2, 3]
  for line, w in zip(lines, want):
    assert [(e["type"], e["start"], e["end"]) for e in line["entities"]] == [
        (e["entity_group"], e["start"], e["end"]) for e in w]


def test_predict_cli_reads_hf_sequence_and_qa_models(dirs, tmp_path):
  lines = run_predict(dirs["classification"], "classify",
                      [{"text": t} for t in TEXTS[:3]], tmp_path)
  want = hf_pipeline("text-classification", dirs["classification"])(TEXTS[:3], top_k=None)
  for line, w in zip(lines, want):
    assert line["label"] == w[0]["label"]
    for x in w:
      np.testing.assert_allclose(line["scores"][x["label"]], x["score"], atol=1e-4)
  question, context = "Who visited Paris?", "Angela Merkel visited Paris in May."
  line, = run_predict(dirs["span"], "answer", [{"question": question, "context": context}],
                      tmp_path)
  w = transformers_qa(dirs["span"], question, context, max_answer_len=30)
  assert (line["answer"], line["start"], line["end"]) == (w["answer"], w["start"], w["end"])


# ------------------------------------------------------------------- errors


def test_architecture_and_unmapped_names_are_clear_errors(dirs, tmp_path):
  import shutil
  from safetensors.numpy import load_file, save_file
  bad = tmp_path / "bad"
  shutil.copytree(dirs["token"], bad)
  cfg = json.loads((bad / "config.json").read_text())
  (bad / "config.json").write_text(json.dumps(dict(
      cfg, architectures=["BertForTokenClassification", "BertForMaskedLM"])))
  with pytest.raises(inference.ModelError, match="names several classes"):
    inference.load(str(bad))
  (bad / "config.json").write_text(json.dumps(dict(cfg, architectures=[
      "BertForMultipleChoice"])))
  with pytest.raises(inference.ModelError, match="BertForMultipleChoice.*bert_jax reads"):
    inference.load(str(bad))
  (bad / "config.json").write_text(json.dumps({k: v for k, v in cfg.items()
                                               if k != "architectures"}))
  with pytest.raises(inference.ModelError, match="no 'architectures'.*ambiguous"):
    inference.load(str(bad))
  # the head of another architecture: named, with what bert_jax reads instead
  (bad / "config.json").write_text(json.dumps(dict(cfg, architectures=[
      "BertForQuestionAnswering"])))
  with pytest.raises(inference.ModelError) as e:
    inference.load(str(bad))
  msg = str(e.value)
  assert ("does not map for BertForQuestionAnswering: classifier.bias, classifier.weight; "
          "for BertForQuestionAnswering bert_jax reads bert.embeddings.*") in msg, msg
  assert msg.endswith("qa_outputs.weight, qa_outputs.bias"), msg
  (bad / "config.json").write_text(json.dumps(cfg))
  sd = load_file(str(bad / "model.safetensors"))
  sd["pooler_extra.weight"] = np.zeros(3, np.float32)
  sd["bert.encoder.layer.2.output.dense.bias"] = np.zeros(32, np.float32)
  save_file(sd, str(bad / "model.safetensors"))
  with pytest.raises(inference.ModelError) as e:
    inference.load(str(bad))
  msg = str(e.value)
  assert "does not map for BertForTokenClassification: bert.encoder.layer.2" in msg, msg
  assert "beyond num_hidden_layers=2" in msg and "pooler_extra.weight" in msg, msg
  assert "classifier.weight, classifier.bias" in msg and "wrong num_layers" not in msg


# --------------------------------- acceptance 3: export -> import -> predict


def test_converted_hf_task_dirs_keep_their_heads(dirs, tmp_path):
  """HF task dir -> bert_jax params dir (head and labels kept) -> HF again: equal."""
  for kind in ("classification", "token", "span"):
    params_dir = str(tmp_path / f"{kind}_params")
    summary = convert.convert(dirs[kind], params_dir)
    assert summary["to"] == "bert_jax"
    back = str(tmp_path / f"{kind}_hf")
    convert.convert(params_dir, back, dst_format="hf")
    a, b = convert.load(dirs[kind]), convert.load(back)
    assert a.task["kind"] == b.task["kind"] == kind
    assert a.task["label_names"] == b.task["label_names"]
    for (p, x), (q, y) in zip(sorted(convert.common.flatten(a.params)),
                              sorted(convert.common.flatten(b.params))):
      assert p == q
      if "pooler" not in p or kind == "classification":
        np.testing.assert_array_equal(x, y)
    _, m = inference.load(params_dir)
    assert m.kind == kind


# ------------------------------- acceptance 2: fine-tuning from an HF task dir


def write_jsonl(path, rows):
  path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
  return str(path)


def finetune_from(directory, config, workdir, batch):
  """One step (one batch = the whole train set) without dropout; the step-1 loss."""
  from bert_jax.train import finetune
  config.model.hidden_dropout_prob = config.model.attention_dropout_prob = 0.0
  config.data.max_seq_length = 64
  config.train.global_batch_size, config.train.num_epochs = batch, 1.0
  config.train.log_every_steps, config.data.predict_test = 1, False
  finetune.train_and_evaluate(config, str(workdir))
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
    rows = [json.loads(line) for line in f]
  return next(r for r in rows if r["step"] == 1 and "train/loss" in r)["train/loss"]


def hf_loss(directory, texts, labels, **kwargs):
  cls = {"token": transformers.AutoModelForTokenClassification}.get(
      kwargs.pop("kind", ""), transformers.AutoModelForSequenceClassification)
  model = cls.from_pretrained(directory).eval()
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  enc = tok(texts, padding=True, return_tensors="pt", **kwargs)
  with torch.no_grad():
    return float(model(**enc, labels=labels).loss)


SENTENCES = ["the film was great", "an awful , boring plot", "it is a film",
             "great acting and a fine story", "I did not like it at all",
             "some parts were good", "the worst film of the year", "fine"]


@pytest.mark.parametrize("kind", ["classification", "multilabel", "regression"])
def test_finetuning_from_an_hf_dir_with_its_labels_continues_its_head(dirs, kind,
                                                                     tmp_path):
  from configs import finetune_glue
  directory = dirs[kind]
  c = finetune_glue.get_config(f"task=mrpc,init=hf:{directory},size=tiny")
  c.data.task, c.data.source, c.data.kind = "jsonl", "local", kind
  rng = np.random.default_rng(0)
  if kind == "classification":
    labels = rng.integers(0, 3, len(SENTENCES))
    c.data.num_labels, c.data.label_names = 3, "negative,neutral,positive"
    as_row = int
  elif kind == "multilabel":   # the HF dir's generic names LABEL_0..3 match any
    labels = (rng.random((len(SENTENCES), 4)) < 0.4).astype(np.float32)
    c.data.num_labels = 4
    as_row = lambda y: [int(j) for j in np.flatnonzero(y)]  # noqa: E731
  else:
    labels = rng.normal(size=len(SENTENCES)).round(3)
    as_row = float
  rows = [{"text_a": t, "label": as_row(y), "idx": i}
          for i, (t, y) in enumerate(zip(SENTENCES, labels))]
  c.data.train_file = c.data.eval_file = write_jsonl(tmp_path / "train.jsonl", rows)
  loss = finetune_from(directory, c, tmp_path / "run", len(rows))
  target = torch.tensor(labels, dtype=torch.long if kind == "classification"
                        else torch.float32)
  np.testing.assert_allclose(loss, hf_loss(directory, SENTENCES, target), atol=1e-4)


def test_finetuning_from_an_hf_token_dir_continues_its_head(tmp_path):
  """conll2003's nine labels: the HF tagger's head is continued, the loss is the HF
  model's (labels on each word's first piece, as transformers' examples do)."""
  from bert_jax.data.tasks import ner
  from configs import finetune_ner
  labels = list(ner.LABELS)
  directory = save(hf_model(transformers.BertForTokenClassification, 7,
                            id2label=dict(enumerate(labels)),
                            label2id={n: i for i, n in enumerate(labels)}),
                   tmp_path / "hf_ner")
  data = tmp_path / "conll"
  data.mkdir()
  sentences = [["Angela", "Merkel", "visited", "Paris", "."],
               ["Google", "said", "$", "1,200", "in", "Berlin"],
               ["the", "EU", "and", "Japan"], ["Smith", "visited", "Zürich"]]
  rng = np.random.default_rng(1)
  tags = [[int(t) for t in rng.integers(0, len(labels), len(s))] for s in sentences]
  text = "\n\n".join("\n".join(f"{w} NN O {labels[t]}" for w, t in zip(s, ts))
                     for s, ts in zip(sentences, tags)) + "\n"
  for name in ("train.txt", "valid.txt", "test.txt"):
    (data / name).write_text("-DOCSTART- -X- -X- O\n\n" + text)
  c = finetune_ner.get_config(f"init=hf:{directory},size=tiny")
  c.data.source, c.data.data_dir = "local", str(data)
  loss = finetune_from(directory, c, tmp_path / "run", len(sentences))
  tok = transformers.AutoTokenizer.from_pretrained(directory)
  enc = tok(sentences, is_split_into_words=True, padding=True)
  target = []
  for i, ts in enumerate(tags):
    seen, row = set(), []
    for w in enc.word_ids(i):
      row.append(-100 if w is None or w in seen else ts[w])
      seen.add(w)
    target.append(row)
  want = hf_loss(directory, sentences, torch.tensor(target), kind="token",
                 is_split_into_words=True)
  np.testing.assert_allclose(loss, want, atol=1e-4)


def test_other_labels_get_a_new_head_and_the_log_says_so(dirs, tmp_path, monkeypatch):
  from bert_jax.data import tasks
  from bert_jax.train import finetune_source
  from bert_jax.train import logging as log_lib
  from configs import finetune_glue
  said = []
  monkeypatch.setattr(log_lib, "info", lambda msg, *a: said.append(msg % a))
  c = finetune_source.with_source_model(   # the source's shape, as the job takes it
      finetune_glue.get_config(f"task=mrpc,init=hf:{dirs['classification']},size=tiny"))
  tok = finetune_source.initial_weights_and_tokenizer(c)[1]
  assert not finetune_source.source_head(c, tasks.get_task(c.data, tok))  # 2 labels
  assert "differs from task mrpc" in said[-1] and "new head" in said[-1], said
  c.data.task, c.data.num_labels = "jsonl", 3
  c.data.label_names = "negative,neutral,positive"
  assert finetune_source.source_head(c, tasks.get_task(c.data, tok))
  assert "continues from that head" in said[-1], said
  c.data.label_names = "neutral,negative,positive"   # same count, other order
  assert not finetune_source.source_head(c, tasks.get_task(c.data, tok))
  # a token model's head never serves a sequence task
  c.init.checkpoint = f"hf:{dirs['token']}"
  assert not finetune_source.source_head(c, tasks.get_task(c.data, tok))


# --------------------------------- acceptance 3: export -> import -> predict


def predictions(path, kind):
  tok, model = inference.load(path)
  assert model.kind == kind
  if kind == "token":
    return [(r["tags"], r["entities"]) for r in inference.tag(model, tok, TEXTS)]
  if kind == "span":
    got = inference.answer(model, tok, ["Who visited Paris?", "How much?"] * 2,
                           ["Angela Merkel visited Paris in May.",
                            "It costs 40 dollars, or 35 euros."] * 2)
    return [(g["answer"], g["start"], g["end"], round(g["probability"], 5),
             round(g.get("null_odds", 0.0), 4)) for g in got]
  got = inference.classify(model, tok, TEXTS)
  return [{k: (np.round(list(v.values()), 5).tolist() if k == "scores" else
               round(v, 5) if isinstance(v, float) else v) for k, v in g.items()}
          for g in got]


@pytest.mark.parametrize("kind,task,names", [
    ("classification", "mnli", ["entailment", "neutral", "contradiction"]),
    ("multilabel", "jsonl", ["a", "b", "c", "d"]),
    ("regression", "stsb", []),
    ("token", "conll2003", NER),
    ("span", "squad_v2.0", [])])
def test_finetuned_workdir_export_import_predict_round_trip(kind, task, names, tmp_path):
  import flax.linen as nn
  import jax
  from bert_jax.config import ModelConfig
  from bert_jax.models import make_task_model
  from tests import inference_helpers
  cfg = ModelConfig(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=2,
                    intermediate_size=64, max_position_embeddings=64)
  num_labels = {"span": 2, "regression": 1}.get(kind, len(names))
  model = make_task_model(kind, cfg, num_labels)
  dummy = np.zeros((1, 8), np.int32)
  params = jax.tree_util.tree_map(np.array, nn.meta.unbox(
      model.init(jax.random.PRNGKey(3), dummy, dummy, dummy)["params"]))
  params["classifier"]["kernel"] = np.random.default_rng(0).normal(
      0, 3.0, params["classifier"]["kernel"].shape).astype(np.float32)
  workdir = inference_helpers.write_finetune_workdir(
      tmp_path / "run", params, cfg,
      {"task": task, "kind": kind, "label_names": names, "max_seq_length": 16,
       "doc_stride": 4}, os.path.join(MINILM, "vocab.txt"))
  want = predictions(workdir, kind)
  exported = str(tmp_path / "hf")
  convert.convert(workdir, exported)             # -> the transformers task class
  params_dir = str(tmp_path / "params")
  convert.convert(exported, params_dir)          # -> a bert_jax params dir, head kept
  assert predictions(exported, kind) == want
  assert predictions(params_dir, kind) == want
  # transformers reads the export as the task model it is
  cls = getattr(transformers, convert.hf.TASK_CLASSES[kind][0])
  back = cls.from_pretrained(exported)
  if names:
    assert [back.config.id2label[i] for i in range(len(names))] == names


def test_finetuning_from_an_hf_qa_dir_continues_its_head(dirs, tmp_path):
  """SQuAD v1.1 files: the HF QA head is continued; the step-1 loss is the HF model's
  on the same (padded) batch, start/end tokens found from the fast tokenizer's offsets."""
  from configs import finetune_squad
  qas = [("Who visited Paris?", "Angela Merkel visited Paris in May.", "Angela Merkel"),
         ("Where is the dog?", "The lazy dog sleeps under the old oak tree.", "oak tree"),
         ("How much?", "It costs 40 dollars, or 35 euros.", "40 dollars"),
         ("When?", "It happened on 3 June 2021, late at night.", "3 June 2021")]
  data = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
      {"context": c, "qas": [{"id": str(i), "question": q, "answers": [
          {"text": a, "answer_start": c.index(a)}]}]} for i, (q, c, a) in enumerate(qas)]}]}
  for name in ("train-v1.1.json", "dev-v1.1.json"):
    (tmp_path / name).write_text(json.dumps(data), encoding="utf-8")
  c = finetune_squad.get_config(f"task=squad_v1.1,init=hf:{dirs['span']},size=tiny")
  c.data.source, c.data.data_dir = "local", str(tmp_path)
  loss = finetune_from(dirs["span"], c, tmp_path / "run", len(qas))
  tok = transformers.AutoTokenizer.from_pretrained(dirs["span"])
  # padded as the batch was (max_seq_length): neither model masks the span logits of
  # padding, so the softmax over positions depends on the padded length
  enc = tok([q for q, _, _ in qas], [c for _, c, _ in qas], padding="max_length",
            max_length=c.data.max_seq_length, return_offsets_mapping=True)
  starts, ends = [], []
  for i, (_, context, a) in enumerate(qas):
    begin, end = context.index(a), context.index(a) + len(a)
    tokens = [j for j, (s, e) in enumerate(enc["offset_mapping"][i])
              if enc.sequence_ids(i)[j] == 1 and s < end and e > begin]
    starts.append(tokens[0])
    ends.append(tokens[-1])
  model = transformers.AutoModelForQuestionAnswering.from_pretrained(dirs["span"]).eval()
  inputs = {k: torch.tensor(v) for k, v in enc.items() if k != "offset_mapping"}
  with torch.no_grad():
    want = float(model(**inputs, start_positions=torch.tensor(starts),
                       end_positions=torch.tensor(ends)).loss)
  np.testing.assert_allclose(loss, want, atol=1e-4)
