"""Task data: local file formats (GLUE TSV, SQuAD json, CoNLL columns), WordPiece
packing against HF's BertTokenizerFast, SentencePiece offsets for bert_jax checkpoints."""
import json
import os

import numpy as np
import pytest

from bert_jax.data import corpora, tokenizers
from bert_jax.data.tasks import common, glue, ner, squad
from configs import finetune_common

VOCAB = os.path.join(finetune_common.minilm_dir(), "vocab.txt")


def write(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_glue_tsv_formats(tmp_path):
  write(tmp_path / "MRPC/train.tsv", [
      "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String",
      "1\t702876\t702977\tAmrozi accused his brother .\tReferring to him as the witness ."])
  write(tmp_path / "MRPC/test.tsv", [
      "index\t#1 ID\t#2 ID\t#1 String\t#2 String", "0\t1\t2\tA b .\tC d ."])
  write(tmp_path / "CoLA/dev.tsv", ["gj04\t1\t\tThe sailors rode the breeze clear of the rocks."])
  write(tmp_path / "STS-B/dev.tsv", [
      "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
      "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man.\tA guy.\t5.000"])
  write(tmp_path / "MNLI/dev_matched.tsv", [
      "index\tpromptID\tpairID\tgenre\ts1bp\ts2bp\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label",
      "0\t1\t2\tgov\tx\tx\tx\tx\tThe cat sat.\tA cat sat.\tentailment\tneutral"])
  mrpc = glue.load_tsv(glue.get("mrpc"), str(tmp_path), "train")
  assert mrpc == [{"text_a": "Amrozi accused his brother .",
                   "text_b": "Referring to him as the witness .", "label": 1, "idx": 0}]
  assert glue.load_tsv(glue.get("mrpc"), str(tmp_path), "test")[0]["label"] == -1
  cola = glue.load_tsv(glue.get("cola"), str(tmp_path), "validation")
  assert cola[0]["label"] == 1 and cola[0]["text_b"] is None
  assert glue.load_tsv(glue.get("stsb"), str(tmp_path), "validation")[0]["label"] == 5.0
  mnli = glue.load_tsv(glue.get("mnli"), str(tmp_path), "validation_matched")
  assert mnli[0]["label"] == glue.NLI3.index("neutral")   # the last column, gold_label
  with pytest.raises(FileNotFoundError, match="data.data_dir"):
    glue.load_tsv(glue.get("rte"), str(tmp_path), "train")
  path = glue.write_submission(glue.get("mnli"), "test_mismatched", mnli, [2],
                               str(tmp_path / "out"))
  assert os.path.basename(path) == "MNLI-mm.tsv"
  assert open(path).read() == "index\tprediction\n0\tcontradiction\n"


def test_squad_json_and_conll_files(tmp_path):
  data = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{
      "context": "Paris is in France.",
      "qas": [{"id": "a", "question": "Where?", "answers": [
          {"text": "France", "answer_start": 12}], "is_impossible": False},
              {"id": "b", "question": "Who?", "answers": [], "is_impossible": True}]}]}]}
  (tmp_path / "dev-v2.0.json").write_text(json.dumps(data))
  exs = squad.load_json(str(tmp_path / "dev-v2.0.json"))
  assert [e["id"] for e in exs] == ["a", "b"] and exs[1]["is_impossible"]
  assert exs[0]["context"][12:18] == "France"
  write(tmp_path / "train.txt", ["-DOCSTART- -X- -X- O", "", "EU NNP B-NP I-ORG",
                                 "rejects VBZ B-VP O", "German JJ B-NP I-MISC", "",
                                 "Peter NNP B-NP I-PER", "Blackburn NNP I-NP I-PER"])
  sents = ner.load_conll(str(tmp_path / "train.txt"))
  assert [s["tokens"] for s in sents] == [["EU", "rejects", "German"], ["Peter", "Blackburn"]]
  assert [ner.LABELS[t] for t in sents[0]["tags"]] == ["I-ORG", "O", "I-MISC"]
  write(tmp_path / "bad.txt", ["EU NNP B-NP I-FOO"])
  with pytest.raises(ValueError, match="bad.txt:1: tag 'I-FOO'"):
    ner.load_conll(str(tmp_path / "bad.txt"))


def test_wordpiece_packing_matches_hf_tokenizer():
  from transformers import BertTokenizerFast
  hf = BertTokenizerFast(VOCAB, do_lower_case=True)
  tok = common.WordPiece(VOCAB, lowercase=True)
  a, b = "Héllo, World! Tokenization isn't trivial.", "Über-long wordsxyzzy 42"
  ids_a, offsets = tok.encode(a)
  assert ids_a == hf(a, add_special_tokens=False)["input_ids"]
  ids, types, mask, _ = common.pack(ids_a, tok.encode(b)[0], tok, 40)
  ref = hf(a, b, padding="max_length", max_length=40)
  assert ids.tolist() == ref["input_ids"] and types.tolist() == ref["token_type_ids"]
  assert mask.tolist() == ref["attention_mask"]
  ref_off = hf(a, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
  assert [tuple(o) for o in offsets] == [tuple(o) for o in ref_off]
  words = ["EU", "rejects", "Blackburn's"]
  piece_ids, word_ids = tok.encode_words(words)
  ref = hf(words, is_split_into_words=True, add_special_tokens=False)
  assert piece_ids == ref["input_ids"] and word_ids == ref.word_ids()


def test_sentencepiece_offsets_map_pieces_to_text(tmp_path):
  docs = corpora.embedded_corpus()[:60]
  spm = tokenizers.SentencePieceTokenizer.train(docs, str(tmp_path / "spm.model"),
                                                vocab_size=400)
  tok = common.SentencePieceOffsets(spm)
  text = "Café déjà vu: the function returns None."
  ids, offsets = tok.encode(text)
  assert ids == spm.encode(text)
  for i, (s, e) in zip(ids, offsets):
    piece = spm.id_to_piece(i).replace("\u2581", " ")
    if not piece.startswith("<"):       # byte-fallback pieces cover part of a char
      assert text[s:e].strip() == piece.strip()
  assert np.all(np.diff([s for s, _ in offsets]) >= 0)


def test_multilabel_and_regression_features_and_predictions():
  from bert_jax.data.tasks import classification
  tok = common.WordPiece(VOCAB)
  exs = [{"text_a": "a b", "text_b": None, "label": [0, 2], "idx": 0},
         {"text_a": "c", "text_b": None, "label": [], "idx": 1}]
  f = classification.featurize(exs, tok, 8, 4, "multilabel", 3)
  np.testing.assert_array_equal(f["label"], [[1, 0, 1], [0, 0, 0]])
  preds = classification.predictions(np.array([[2.0, -1.0, 0.1], [-3.0, -0.1, -2.0]]),
                                     "multilabel")
  np.testing.assert_array_equal(preds, [[1, 0, 1], [0, 0, 0]])
  with pytest.raises(ValueError, match=r"label \[0, 3\]; the head has num_labels=3"):
    classification.featurize([{"text_a": "a", "label": [0, 3], "idx": 5}], tok, 8, 4,
                             "multilabel", 3)
  r = classification.featurize([{"text_a": "a", "label": 4.2, "idx": 0}], tok, 8, 4,
                               "regression", 1)
  assert r["label"].dtype == np.float32 and r["label"][0] == pytest.approx(4.2)


# ----------------------------------------------------------------------------------
# What a new user hits first.


def _finetune_config(glue_task, **data):
  from configs import finetune_glue  # pylint: disable=g-import-not-at-top
  c = finetune_glue.get_config(f"task={glue_task}")
  c.data.update(data)
  return c


def test_jsonl_task_reads_its_files_with_the_default_source(tmp_path):
  from bert_jax.data import tasks  # pylint: disable=g-import-not-at-top
  train = tmp_path / "train.jsonl"
  train.write_text('{"text_a": "good film", "label": 1}\n{"text_a": "bad", "label": 0}\n')
  c = _finetune_config("mrpc", task="jsonl", train_file=str(train))
  assert c.data.source == "tfds"  # the README's command does not set it
  task = tasks.get_task(c.data, common.WordPiece(VOCAB))
  assert [ex["label"] for ex in task.load("train")] == [1, 0]


def test_jsonl_label_names_from_the_config_or_from_string_labels(tmp_path):
  from bert_jax.data import tasks  # pylint: disable=g-import-not-at-top
  tok = common.WordPiece(VOCAB)
  train, dev, test = (tmp_path / f"{s}.jsonl" for s in ("train", "dev", "test"))
  lines = lambda labels: "".join(  # noqa: E731
      json.dumps({"text_a": f"text {i}", "label": v}) + "\n" for i, v in enumerate(labels))
  train.write_text(lines(["pos", "neg", "neutral", "pos"]))
  dev.write_text(lines(["neutral", "pos"]))
  test.write_text(lines([None, "unseen"]))   # test labels are not read
  files = dict(task="jsonl", train_file=str(train), eval_file=str(dev),
               test_file=str(test), num_labels=3)

  # string labels, no names: the sorted distinct train labels name them, even when
  # the eval split is read first
  task = tasks.get_task(_finetune_config("mrpc", **files).data, tok)
  assert [ex["label"] for ex in task.load("validation")] == [1, 2]
  assert [ex["label"] for ex in task.load("train")] == [2, 0, 1, 2]
  assert task.label_names() == ["neg", "neutral", "pos"]
  assert len(task.load("test")) == 2
  # configured names: string labels by name, integer labels by index
  named = _finetune_config("mrpc", **files, label_names="pos, neutral,neg")
  task = tasks.get_task(named.data, tok)
  assert [ex["label"] for ex in task.load("train")] == [0, 2, 1, 0]
  assert task.label_names() == ["pos", "neutral", "neg"]
  train.write_text(lines([0, 2, 1]))
  assert [ex["label"] for ex in tasks.get_task(named.data, tok).load("train")] == [0, 2, 1]
  assert tasks.get_task(_finetune_config("mrpc", **files).data, tok).label_names() == [
      "0", "1", "2"]

  errors = [  # (config, split, error)
      (dict(files, label_names="a,b"), None,
       r"data.label_names='a,b' has 2 labels \['a', 'b'\] but config field "
       r"data.num_labels=3"),
      (dict(files, label_names="a,a,b"), None, r"data.label_names='a,a,b': expected "
       "distinct"),
      (dict(files, kind="regression", label_names="a"), None,
       r"regression task has no label names"),
      (dict(files, label_names="pos,neg,other"), "validation",
       r"dev.jsonl example 0 \(idx 0\) has label 'neutral', which is not one of the "
       r"label names \['pos', 'neg', 'other'\]"),
      (dict(files, num_labels=2), "train",
       r"data.train_file='.*train.jsonl' \(string labels, data.label_names unset\) has "
       r"3 labels \['neg', 'neutral', 'pos'\] but config field data.num_labels=2"),
      (dict(task="sst2", label_names="neg,pos"), None,
       r"data.label_names='neg,pos': task sst2 names its labels \['negative', "
       r"'positive'\]; expected ''"),
  ]
  train.write_text(lines(["pos", "neg", "neutral"]))
  for fields, split, error in errors:
    with pytest.raises(ValueError, match=error):
      tasks.get_task(_finetune_config("mrpc", **fields).data, tok).load(split)
  train.write_text(lines(["pos", "neg", "neutral", 1]))
  with pytest.raises(ValueError, match=r"train.jsonl mixes string and numeric labels"):
    tasks.get_task(_finetune_config("mrpc", **files).data, tok).load("train")
  assert [ex["label"] for ex in tasks.get_task(named.data, tok).load("train")] == [
      0, 2, 1, 1]   # with names, numbers index them
  train.write_text(lines([0, 1, 2]))
  with pytest.raises(ValueError, match=r"dev.jsonl has string labels but config field "
                     r"data.train_file='.*train.jsonl' has numbers"):
    tasks.get_task(_finetune_config("mrpc", **files).data, tok).load("validation")
  train.write_text(lines([["pos", "neg"], [], ["neutral"]]))   # multi-label
  task = tasks.get_task(_finetune_config("mrpc", **files, kind="multilabel").data, tok)
  assert [ex["label"] for ex in task.load("train")] == [[2, 0], [], [1]]
  assert tasks.get_task(_finetune_config(  # a task's own names are allowed
      "sst2", label_names="negative,positive").data, tok).label_names() == [
          "negative", "positive"]


def test_missing_tfds_dataset_fails_at_once_naming_local_files(tmp_path, monkeypatch):
  import socket  # pylint: disable=g-import-not-at-top

  from bert_jax.data import tasks  # pylint: disable=g-import-not-at-top

  def no_network(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")

  monkeypatch.setattr(socket.socket, "connect", no_network)
  monkeypatch.setattr(socket, "create_connection", no_network)
  monkeypatch.setattr(socket, "getaddrinfo", no_network)
  c = _finetune_config("rte", data_dir=str(tmp_path))
  task = tasks.get_task(c.data, common.WordPiece(VOCAB))
  with pytest.raises(ValueError, match=r"glue/rte.*not prepared.*"
                     r"data.source=local --config.data.data_dir"):
    task.load("train")


def test_tfds_lazy_imports_are_installed_by_setup():
  """`tfds.data_source` imports modules tensorflow-datasets does not declare (e.g.
  importlib_resources on Python >= 3.9); setup.py must install them."""
  import ast  # pylint: disable=g-import-not-at-top
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top

  from packaging.requirements import Requirement  # pylint: disable=g-import-not-at-top
  from tensorflow_datasets.core import dataset_builder  # pylint: disable=g-import-not-at-top

  tree = ast.parse(open(dataset_builder.__file__, encoding="utf-8").read())
  modules = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.With) and "lazy_imports" in ast.unparse(node.items[0]):
      for n in ast.walk(node):
        if isinstance(n, ast.Import):
          modules.update(a.name.split(".")[0] for a in n.names)
        elif isinstance(n, ast.ImportFrom) and n.level == 0:
          modules.add(n.module.split(".")[0])
  modules -= set(sys.stdlib_module_names) | {"tensorflow_datasets"}
  assert "importlib_resources" in modules

  def names(requirements):
    reqs = [Requirement(r) for r in requirements]
    return {md.distribution(r.name).metadata["Name"].lower().replace("_", "-")
            for r in reqs if r.marker is None or r.marker.evaluate({"extra": ""})}

  setup_py = ast.parse(open(os.path.join(os.path.dirname(__file__), "..", "setup.py"),
                            encoding="utf-8").read())
  ours = next(ast.literal_eval(n.value) for n in setup_py.body if isinstance(n, ast.Assign)
              and n.targets[0].id == "INSTALL_REQUIRES")
  declared = names(md.requires("tensorflow-datasets")) | names(ours)
  distributions = md.packages_distributions()
  for module in sorted(modules):
    dists = {d.lower().replace("_", "-") for d in distributions[module]}
    assert dists & declared, f"{module} ({dists}) is installed by neither tfds nor setup.py"


def test_configs_cite_files_that_exist():
  import re  # pylint: disable=g-import-not-at-top
  root = os.path.join(os.path.dirname(__file__), "..")
  for name in sorted(os.listdir(os.path.join(root, "configs"))):
    if name.endswith(".py"):
      text = open(os.path.join(root, "configs", name), encoding="utf-8").read()
      for cited in re.findall(r"\b((?:experiments|benchmarks|configs)/\w+\.py)\b", text):
        assert os.path.isfile(os.path.join(root, cited)), f"configs/{name} cites {cited}"
