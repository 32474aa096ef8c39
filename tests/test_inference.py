"""bert_jax.inference: the API and pipelines against independent references
(sentence-transformers, the pretraining run's own fill-mask printout) and, for long
inputs, a BERT whose weights make its predictions known in advance."""
import json
import os

import numpy as np
import pytest

from bert_jax import inference
from bert_jax.config import ModelConfig
from bert_jax.data.tasks import common as task_common
from bert_jax.inference import model as model_lib
from bert_jax.models import make_task_model
from bert_jax.train import pretrain
from configs import finetune_common
from configs import pretrain as pretrain_config
from tests import inference_helpers as helpers
from tests.helpers import write_embedded_corpus

MINILM = finetune_common.minilm_dir()
VOCAB = os.path.join(MINILM, "vocab.txt")
WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly judge "
         "boxing matches in Paris , and 北京 天气 很好 ; don't stop !").split()


def mixed_sentences(n, seed=0):
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(WORDS, int(rng.integers(1, 120)))) for _ in range(n)]


def test_bucket_sizes():
  assert [model_lib.bucket(n, 512, 16) for n in (1, 16, 17, 100, 300, 512)] == [
      16, 16, 32, 128, 512, 512]
  assert [model_lib.bucket(n) for n in (1, 3, 8, 9)] == [1, 4, 8, 16]


def test_embed_equals_sentence_transformers():
  from sentence_transformers import SentenceTransformer
  texts = mixed_sentences(50)
  want = SentenceTransformer(MINILM, device="cpu").encode(texts, batch_size=16)
  tok, model = inference.load(MINILM)
  assert (model.source.pooling, model.source.normalize) == ("mean", True)
  one_batch = inference.embed(model, tok, texts, batch_size=64)
  several = inference.embed(model, tok, texts, batch_size=7)
  np.testing.assert_allclose(one_batch, want, atol=1e-5)
  np.testing.assert_allclose(several, want, atol=1e-5)
  out = model(**tok(texts[:3]))   # the raw API: transformers-style call
  assert out["sequence_output"].shape[:2] == tok(texts[:3])["input_ids"].shape
  assert out["pooled_output"].shape == (3, 384)


def test_fill_mask_matches_the_pretraining_printout(tmp_path):
  c = pretrain_config.get_config("tiny,vocab=600,seq=64,batch=8,steps=6")
  m = c.model
  m.hidden_size, m.num_heads, m.intermediate_size, m.num_layers = 32, 2, 64, 1
  c.data.corpus = write_embedded_corpus(tmp_path / "docs.txt", 40)
  c.data.dupe_factor, c.data.tokenizer_input_sentence_size = 1, 20000
  c.train.eval_every_steps, c.train.eval_batches = 6, 1
  c.train.checkpoint_every_steps = 6
  workdir = str(tmp_path / "run")
  pretrain.train_and_evaluate(c, workdir)
  with open(os.path.join(workdir, "final_eval.json"), encoding="utf-8") as f:
    printed = json.load(f)["fill_mask"]
  tok, model = inference.load(workdir)
  got = inference.fill_mask(model, tok, [c.fill_mask_text], top_k=5)[0]
  assert len(got) == 1  # one [MASK]
  assert [g["token"] for g in got[0]] == [p[0] for p in printed]
  np.testing.assert_allclose([g["probability"] for g in got[0]],
                             [p[1] for p in printed], atol=1e-5)

  # Long input: a mask beyond the first window is predicted in its central window,
  # exactly as the model predicts that window on its own.
  words = c.fill_mask_text.replace("[MASK]", "").split()
  long_text = " ".join(words * 12) + " [MASK] " + " ".join(words * 3)
  got = inference.fill_mask(model, tok, [long_text], max_length=32, stride=8)[0][0]
  ids = tok.masked_ids(long_text)
  pos = ids.index(tok.mask_id)
  from bert_jax.data.tasks import windows
  spans = windows.spans(len(ids), 30, 8)
  best = windows.max_context(spans, len(ids))
  (start, n), = [(s, n) for (s, n), b in zip(spans, best) if s <= pos < s + n and b[pos - s]]
  assert start > 0
  window = [tok.cls_id] + ids[start:start + n] + [tok.sep_id]
  logits = model(np.array([window]), masked_lm_positions=[[pos - start + 1]])["mlm_logits"]
  assert [g["token_id"] for g in got] == list(np.argsort(-logits[0, 0])[:5])
  short = inference.fill_mask(model, tok, [c.fill_mask_text], max_length=32)
  assert short == inference.fill_mask(model, tok, [c.fill_mask_text])


# ----------------------------------------------------------- long inputs, windows


@pytest.fixture(scope="module")
def keyword_models(tmp_path_factory):
  """Classifier, tagger and QA model that react to the word 'paris' (helpers)."""
  cfg = ModelConfig(vocab_size=30522, hidden_size=32, num_heads=2, intermediate_size=64,
                    num_layers=1)
  keyword = task_common.WordPiece(VOCAB).encode("paris")[0][0]
  root = tmp_path_factory.mktemp("keyword")
  tasks = {
      "sequence": ("classification", 2, {"task": "jsonl", "kind": "classification",
                                         "label_names": ["other", "paris"]}),
      "token": ("token", 9, {"task": "conll2003", "kind": "token",
                             "label_names": list(helpers.NER_LABELS)}),
      "span": ("span", 2, {"task": "squad_v1.1", "kind": "span", "label_names": [],
                           "max_query_length": 8}),
  }
  out = {}
  for head, (kind, num_labels, task) in tasks.items():
    module = make_task_model(kind, cfg, num_labels)
    params = helpers.keyword_params(module, cfg, keyword, head)
    task.update(max_seq_length=32, doc_stride=16)
    workdir = helpers.write_finetune_workdir(root / head, params, cfg, task, VOCAB)
    out[head] = inference.load(workdir)
  return out


FILLER = " ".join(np.random.default_rng(0).choice(
    "the cat sat on a mat and then it went home to sleep".split(), 80))


def test_classify_finds_the_deciding_word_beyond_the_first_window(keyword_models):
  tok, model = keyword_models["sequence"]
  text = FILLER + " She lives in Paris."
  assert len(tok.encode(text)[0]) > 2 * 32   # several windows of 32
  for aggregate in ("mean", "max"):
    got = inference.classify(model, tok, [text, FILLER], aggregate=aggregate)
    assert [g["label"] for g in got] == ["paris", "other"]
  first_window = model(**tok([text], max_length=32))["logits"]
  assert first_window.argmax(-1).tolist() == [0]  # cut to one window, it is missed
  short = ["in Paris today", "nothing here"]
  a = inference.classify(model, tok, short)
  b = inference.classify(model, tok, short, max_length=512, stride=100)
  assert [x["label"] for x in a] == [x["label"] for x in b] == ["paris", "other"]
  np.testing.assert_allclose([x["score"] for x in a], [x["score"] for x in b], atol=1e-6)


def test_tag_finds_the_entity_beyond_the_first_window(keyword_models):
  tok, model = keyword_models["token"]
  text = FILLER + " She lives in Paris."
  got = inference.tag(model, tok, [text, "Paris, je t'aime", FILLER.split()])
  start = text.index("Paris")
  assert got[0]["entities"] == [{"type": "LOC", "text": "Paris", "start": start,
                                 "end": start + 5, "first_word": 83, "last_word": 83}]
  assert [(e["text"], e["start"]) for e in got[1]["entities"]] == [("Paris", 0)]
  assert got[2]["entities"] == [] and len(got[2]["tags"]) == 80
  short = inference.tag(model, tok, ["I love Paris !"], max_length=256, stride=64)
  assert short == inference.tag(model, tok, ["I love Paris !"])


def test_answer_finds_the_span_beyond_the_first_window(keyword_models):
  tok, model = keyword_models["span"]
  context = FILLER + " She lives in Paris now."
  got = inference.answer(model, tok, ["Where?", "Where?"], [context, "In Paris."])
  assert [(g["answer"], g["start"]) for g in got] == [
      ("Paris", context.index("Paris")), ("Paris", 3)]
  assert got[0]["nbest"][0]["text"] == "Paris" and len(got[0]["nbest"]) <= 20
  short = inference.answer(model, tok, ["Where?"], ["In Paris."], max_length=128)
  assert short[0]["answer"] == got[1]["answer"]
  np.testing.assert_allclose(short[0]["probability"], got[1]["probability"], atol=1e-6)


def test_embed_windows_long_texts_and_not_short_ones():
  tok, model = inference.load(MINILM)
  short = mixed_sentences(4, seed=1)
  np.testing.assert_allclose(inference.embed(model, tok, short, max_length=256),
                             inference.embed(model, tok, short, max_length=512),
                             atol=1e-6)
  long_text = " ".join(mixed_sentences(8, seed=2))
  assert len(tok.encode(long_text)[0]) > 256
  vec = inference.embed(model, tok, [long_text], max_length=128, stride=64)
  np.testing.assert_allclose(np.linalg.norm(vec), 1.0, rtol=1e-6)


def test_a_dir_with_only_tokenizer_json_tokenizes_as_its_vocab(tmp_path):
  import shutil
  for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
    shutil.copy(os.path.join(MINILM, name), tmp_path / name)
  texts = mixed_sentences(20, seed=3)
  from_json = inference.Tokenizer.from_pretrained(str(tmp_path))
  from_vocab = inference.Tokenizer.from_pretrained(MINILM)
  assert from_json.path.endswith("tokenizer.json")
  for key, value in from_json(texts).items():
    np.testing.assert_array_equal(value, from_vocab(texts)[key])
  assert [from_json.encode_words(t.split()) for t in texts] == [
      from_vocab.encode_words(t.split()) for t in texts]
