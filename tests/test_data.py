"""Tests for bert_jax/data: corpora, tokenizer, NSP examples and the loader over
in-memory examples (tests/test_prepare.py has it over prepared shards)."""
import os

import numpy as np
import pytest

from bert_jax.data import corpora, grain_loader, masking, pieces, pretraining, tokenizers
from tests.helpers import assert_same_batches

VOCAB = 1000


@pytest.fixture(scope="module")
def embedded():
  return corpora.embedded_corpus()


@pytest.fixture(scope="module")
def tokenizer(embedded, tmp_path_factory):
  path = str(tmp_path_factory.mktemp("spm") / "spm.model")
  return tokenizers.SentencePieceTokenizer.train(embedded[:120], path, vocab_size=VOCAB)


@pytest.fixture(scope="module")
def tokenized(embedded, tokenizer):
  return pretraining.tokenize_corpus(embedded[:80], tokenizer)


def _examples(tokenized, seed=0, max_seq_length=64, **kwargs):
  args = {"short_seq_prob": 0.1, "dupe_factor": 2, **kwargs}
  return pretraining.create_pretraining_examples(
      tokenized, max_seq_length, rng=np.random.default_rng(seed),
      cls_id=tokenizers.CLS_ID, sep_id=tokenizers.SEP_ID, pad_id=tokenizers.PAD_ID, **args)


# ----------------------------------------------------------------------------------
# Corpora.


def test_embedded_corpus_is_english_prose(embedded):
  assert len(embedded) > 200
  assert all(len(doc) >= 2 for doc in embedded)
  sentences = [s for doc in embedded for s in doc]
  assert sum(len(s) for s in sentences) > 500_000
  assert np.mean([" the " in s for s in sentences]) > 0.3
  assert not any(">>>" in s for s in sentences)
  assert all(len(s.split()) >= 3 for s in sentences)


def test_text_to_sentences_drops_code_and_splits():
  text = ("First sentence here.  Second one\n  follows here!\n\n"
          ">>> x = 1\n\n    code()\n    more()\n")
  assert corpora.text_to_sentences(text) == ["First sentence here.", "Second one follows here!"]


def test_read_text_corpus(tmp_path):
  (tmp_path / "a.txt").write_text("One two three.\nFour five six.\n\n\nSeven eight nine.\n")
  (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbfTen eleven.\r\n\r\nTwelve.\r\n")
  docs = corpora.read_text_corpus(str(tmp_path / "*.txt"))
  assert docs == [["One two three.", "Four five six."], ["Seven eight nine."],
                  ["Ten eleven."], ["Twelve."]]
  assert corpora.read_text_corpus([str(tmp_path / "b.txt"), str(tmp_path / "a.txt")])[0] == [
      "Ten eleven."]
  spec = f"{tmp_path / 'a.txt'},{tmp_path / 'b.txt'}"
  assert corpora.load_corpus(spec) == docs


def test_empty_file_names_the_file(tmp_path):
  path = tmp_path / "empty.txt"
  path.write_text("\n  \n\n")
  with pytest.raises(ValueError, match="is empty") as info:
    corpora.read_text_corpus(str(path))
  assert str(path) in str(info.value)


def test_non_utf8_file_names_file_and_line(tmp_path):
  path = tmp_path / "bad.txt"
  path.write_bytes(b"A fine line.\n\xff\xfe bad\n")
  with pytest.raises(ValueError) as info:
    corpora.read_text_corpus(str(path))
  assert f"{path}:2" in str(info.value)


def test_missing_pattern_is_named(tmp_path):
  pattern = str(tmp_path / "nothing-*.txt")
  with pytest.raises(FileNotFoundError, match="nothing-"):
    corpora.read_text_corpus(pattern)
  with pytest.raises(FileNotFoundError, match="nothing-"):
    corpora.load_corpus(pattern)


def test_split_documents():
  docs = [[f"doc {i} sentence."] for i in range(50)]
  train, evaluation = corpora.split_documents(docs, 0.1, seed=3)
  assert len(evaluation) == 5 and len(train) == 45
  assert sorted(train + evaluation) == sorted(docs)
  assert (train, evaluation) == corpora.split_documents(docs, 0.1, seed=3)
  assert evaluation != corpora.split_documents(docs, 0.1, seed=4)[1]
  assert len(corpora.split_documents(docs[:3], 0.01, seed=0)[1]) == 1
  assert corpora.split_documents(docs, 0.0, seed=0) == (docs, [])
  with pytest.raises(ValueError, match="at least 2 documents"):
    corpora.split_documents(docs[:1], 0.1, seed=0)
  with pytest.raises(ValueError, match="eval_fraction"):
    corpora.split_documents(docs, 1.0, seed=0)


# ----------------------------------------------------------------------------------
# Tokenizer.


def test_special_ids(tokenizer):
  assert tokenizer.vocab_size == VOCAB
  ids = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id,
         tokenizer.mask_id, tokenizer.first_normal_id)
  assert ids == (0, 1, 2, 3, 4, 5)
  assert [tokenizer.id_to_piece(i) for i in range(5)] == list(pieces.SPECIAL_TOKENS)
  assert min(tokenizer.encode("The [MASK] and [SEP] are plain text here.")) >= 5


@pytest.mark.parametrize("text", [
    "Hello  world,\tthe quick  brown fox.",
    "  leading and trailing  ",
    "Ünïcödé, 中文 and emoji \U0001F600 survive\nnewlines too.",
])
def test_round_trip_is_lossless(tokenizer, text):
  assert tokenizer.decode(tokenizer.encode(text)) == text


def test_word_start_mask(tokenizer):
  sentence = "the quick brownish foxes jumped over unbelievably lazy dogs"
  ids = np.array(tokenizer.encode(sentence))
  starts = tokenizer.word_start_mask(ids)
  pieces = [tokenizer.id_to_piece(i) for i in ids]
  np.testing.assert_array_equal(starts, [p.startswith("\u2581") for p in pieces])
  assert starts.sum() == len(sentence.split()) and not starts.all()
  batch = np.stack([ids, ids])
  assert tokenizer.word_start_mask(batch).shape == batch.shape
  assert tokenizer.word_start_mask(np.arange(5)).all()  # special tokens
  cjk = tokenizer.word_start_mask(np.array(tokenizer.encode("中文")))
  assert cjk.sum() == 3  # '▁' then one start per character (byte fallback here)


def test_load_missing_model_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="nope.model"):
    tokenizers.SentencePieceTokenizer.load(str(tmp_path / "nope.model"))


def test_tokenizer_cache(embedded, tmp_path):
  docs = embedded[:60]
  args = {"model_type": "unigram", "seed": 0, "input_sentence_size": 100_000}
  first = tokenizers.get_or_train_tokenizer(docs, str(tmp_path), 700, **args)
  model = tmp_path / "spm.model"
  stamp = os.stat(model).st_mtime_ns
  again = tokenizers.get_or_train_tokenizer(docs, str(tmp_path), 700, **args)
  assert os.stat(model).st_mtime_ns == stamp
  assert again.encode("a test sentence") == first.encode("a test sentence")
  other = tokenizers.get_or_train_tokenizer(docs, str(tmp_path), 600, **args)
  assert other.vocab_size == 600 and os.stat(model).st_mtime_ns != stamp
  assert sorted(os.listdir(tmp_path)) == ["spm.json", "spm.model"]


# ----------------------------------------------------------------------------------
# Pretraining examples.


def _flat(ids) -> str:
  return "," + ",".join(map(str, ids)) + ","


def test_example_layout(tokenized):
  ex = _examples(tokenized)
  n, length = ex["input_ids"].shape
  assert n > 100 and length == 64
  assert all(ex[k].dtype == np.int32 for k in ex)
  for ids, types, mask in zip(ex["input_ids"], ex["token_type_ids"], ex["attention_mask"]):
    size = int(mask.sum())
    np.testing.assert_array_equal(mask, np.arange(length) < size)
    assert (ids[size:] == tokenizers.PAD_ID).all()
    seps = np.flatnonzero(ids == tokenizers.SEP_ID)
    assert ids[0] == tokenizers.CLS_ID and len(seps) == 2 and seps[1] == size - 1
    assert 1 < seps[0] < size - 2  # A and B are non-empty
    assert (ids[1:size] != tokenizers.CLS_ID).all()
    expected_types = (np.arange(length) > seps[0]) & (np.arange(length) < size)
    np.testing.assert_array_equal(types, expected_types)


def test_segments_come_from_the_right_documents(tokenized):
  ex = _examples(tokenized)
  labels, doc, rand_doc = ex["next_sentence_label"], ex["doc_index"], ex["random_doc_index"]
  assert 0.4 < labels.mean() < 0.7
  assert (rand_doc[labels == 0] == -1).all()
  assert (rand_doc[labels == 1] != doc[labels == 1]).all()
  assert (rand_doc[labels == 1] >= 0).all()
  flat_docs = [_flat(t for s in d for t in s) for d in tokenized]
  for ids, mask, label, a_doc, b_doc in zip(ex["input_ids"], ex["attention_mask"], labels,
                                            doc, rand_doc):
    tokens = ids[:mask.sum()]
    sep = np.flatnonzero(tokens == tokenizers.SEP_ID)[0]
    assert _flat(tokens[1:sep]) in flat_docs[a_doc]
    assert _flat(tokens[sep + 1:-1]) in flat_docs[a_doc if label == 0 else b_doc]


def test_examples_are_deterministic(tokenized):
  a, b, c = _examples(tokenized, seed=5), _examples(tokenized, seed=5), _examples(tokenized, 6)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])
  assert a["input_ids"].shape != c["input_ids"].shape or (a["input_ids"] != c["input_ids"]).any()


def test_short_sequences(tokenized):
  ex = _examples(tokenized, short_seq_prob=1.0, dupe_factor=1, max_seq_length=128)
  full = _examples(tokenized, short_seq_prob=0.0, dupe_factor=1, max_seq_length=128)
  assert ex["attention_mask"].sum(1).mean() < 0.8 * full["attention_mask"].sum(1).mean()


def test_example_errors(tokenized):
  with pytest.raises(ValueError, match="max_seq_length"):
    _examples(tokenized, max_seq_length=7)
  with pytest.raises(ValueError, match="too small"):
    _examples(tokenized[:1])


def _unique_token_corpus(num_docs=30, seed=0):
  """Documents whose tokens are consecutive unique ids: order and origin are visible."""
  rng = np.random.default_rng(seed)
  documents, next_id = [], 10
  for _ in range(num_docs):
    doc = []
    for _ in range(int(rng.integers(1, 12))):
      size = int(rng.integers(1, 40))
      doc.append(list(range(next_id, next_id + size)))
      next_id += size
    documents.append(doc)
  return documents


def _segments(ids, mask):
  tokens = ids[:mask.sum()]
  seps = np.flatnonzero(tokens == tokenizers.SEP_ID)
  return tokens, seps


def test_nsp_label_is_the_original_is_random_next():
  """google-research/bert's `is_random_next`: label 0 = B is the text that follows A
  in A's document, 1 = B is a run of another document. Documents shorter than the
  length leave continuation pairs untruncated, so "follows" is exact."""
  docs = _unique_token_corpus()
  ex = _examples(docs, max_seq_length=512, short_seq_prob=0.0, dupe_factor=4)
  labels = ex["next_sentence_label"]
  assert 0.4 < labels.mean() < 0.7 and (labels == 0).sum() > 20
  doc_of = {t: d for d, doc in enumerate(docs) for s in doc for t in s}
  for ids, mask, label, doc in zip(ex["input_ids"], ex["attention_mask"], labels,
                                   ex["doc_index"]):
    tokens, seps = _segments(ids, mask)
    a, b = tokens[1:seps[0]], tokens[seps[0] + 1:-1]
    for segment in (a, b):
      assert (np.diff(segment) == 1).all()
    assert {doc_of[t] for t in a} == {doc}
    if label == 0:
      assert b[0] == a[-1] + 1 and {doc_of[t] for t in b} == {doc}
    else:
      assert len({doc_of[t] for t in b}) == 1 and doc_of[b[0]] != doc


def test_sop_segments_are_consecutive_and_swapped_by_label():
  docs = _unique_token_corpus()
  ex = _examples(docs, max_seq_length=48, objective="sop", dupe_factor=4)
  labels = ex["next_sentence_label"]
  assert 0.4 < labels.mean() < 0.6 and len(labels) > 100
  assert (ex["random_doc_index"] == -1).all()
  doc_of = {t: d for d, doc in enumerate(docs) for s in doc for t in s}
  for ids, mask, label, doc in zip(ex["input_ids"], ex["attention_mask"], labels,
                                   ex["doc_index"]):
    tokens, seps = _segments(ids, mask)
    a, b = tokens[1:seps[0]], tokens[seps[0] + 1:-1]
    assert len(tokens) <= 48 and len(seps) == 2 and len(a) and len(b)
    for segment in (a, b):  # contiguous runs of one document
      assert (np.diff(segment) == 1).all()
      assert {doc_of[t] for t in segment} == {doc}
    assert (a[-1] < b[0]) == (label == 0)


def test_full_sentence_packing_without_nsp():
  docs = _unique_token_corpus()
  length = 40
  ex = _examples(docs, max_seq_length=length, objective="none", dupe_factor=1)
  assert (ex["next_sentence_label"] == 0).all() and (ex["token_type_ids"] == 0).all()
  doc_of = {t: d for d, doc in enumerate(docs) for s in doc for t in s}
  seen = []
  for ids, mask in zip(ex["input_ids"], ex["attention_mask"]):
    tokens, seps = _segments(ids, mask)
    assert tokens[0] == tokenizers.CLS_ID and seps[-1] == len(tokens) - 1
    content = tokens[1:-1]
    # A [SEP] inside the row exactly where the document changes.
    for left, sep, right in zip(content, content[1:], content[2:]):
      if sep == tokenizers.SEP_ID:
        assert doc_of[left] != doc_of[right]
    words = content[content != tokenizers.SEP_ID]
    changes = np.flatnonzero(np.diff([doc_of[t] for t in words]) != 0)
    assert len(changes) == (content == tokenizers.SEP_ID).sum()
    seen.extend(words.tolist())
  all_tokens = [t for doc in docs for s in doc for t in s]
  assert sorted(seen) == all_tokens  # every token exactly once per pass
  sizes = ex["attention_mask"].sum(1)
  assert sizes.mean() > 0.7 * length  # rows filled up to the next sentence that fits


def test_unknown_objective():
  with pytest.raises(ValueError, match="objective: expected one of"):
    _examples(_unique_token_corpus(), objective="mlm")


# ----------------------------------------------------------------------------------
# Loader.

N, LENGTH, LOADER_VOCAB = 40, 32, 100


def _synthetic_examples():
  rng = np.random.default_rng(0)
  ids = rng.integers(5, LOADER_VOCAB, (N, LENGTH)).astype(np.int32)
  sizes = rng.integers(10, LENGTH + 1, N)
  cols = np.arange(LENGTH)[None, :]
  ids[:, 0] = tokenizers.CLS_ID
  ids[:, 5] = tokenizers.SEP_ID
  ids[cols == sizes[:, None] - 1] = tokenizers.SEP_ID
  ids[cols >= sizes[:, None]] = tokenizers.PAD_ID
  return {
      "input_ids": ids,
      "token_type_ids": ((cols > 5) & (cols < sizes[:, None])).astype(np.int32),
      "attention_mask": (cols < sizes[:, None]).astype(np.int32),
      "next_sentence_label": rng.integers(0, 2, N).astype(np.int32),
  }


MASKER = masking.Masker(
    masking.MaskingConfig(max_predictions_per_seq=6, whole_word_masking=True),
    mask_id=tokenizers.MASK_ID, vocab_size=LOADER_VOCAB, first_normal_id=5,
    special_ids=(0, 1, 2, 3, 4),
    word_start_table=np.random.default_rng(1).random(LOADER_VOCAB) < 0.6)


def _loader(**kwargs):
  args = {"global_batch_size": 8, "seed": 7, "masker": MASKER, **kwargs}
  return grain_loader.GrainPretrainingLoader(_synthetic_examples(), **args)


def _take(it, n):
  return [next(it) for _ in range(n)]


def test_loader_batches(tokenized, tokenizer):
  ld = _loader()
  assert ld.batches_per_epoch == 5
  batch = next(iter(ld))
  assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "masked_lm_positions",
                        "masked_lm_ids", "masked_lm_weights", "next_sentence_label"}
  assert batch["input_ids"].shape == (8, LENGTH) and batch["masked_lm_ids"].shape == (8, 6)
  assert batch["masked_lm_weights"].dtype == np.float32
  assert all(batch[k].dtype == np.int32 for k in batch if k != "masked_lm_weights")
  assert batch["masked_lm_weights"].sum() > 0
  assert len(list(iter(_loader(repeat=False)))) == 5
  # Every example once per epoch; the unmasked tokens are the examples' own.
  examples = _synthetic_examples()
  ordered = _loader(shuffle=False, global_batch_size=N)
  one_epoch = ordered.get_batch(0)
  np.testing.assert_array_equal(one_epoch["token_type_ids"], examples["token_type_ids"])
  shuffled = np.concatenate([b["next_sentence_label"] for b in _take(iter(_loader()), 5)])
  assert sorted(shuffled) == sorted(examples["next_sentence_label"])
  # End to end with a real tokenizer and real examples.
  masker = masking.MaskingConfig(max_predictions_per_seq=10,
                                 whole_word_masking=True).bind(tokenizer)
  real = grain_loader.GrainPretrainingLoader(_examples(tokenized), 16, seed=0,
                                             masker=masker)
  batch = next(iter(real))
  assert (batch["masked_lm_weights"].sum(1) > 0).all()


def test_loader_rows_are_whole_examples():
  """Under shuffling every row is one example, its fields aligned: the unmasked
  tokens, segments, mask and NSP label of the same example."""
  examples = _synthetic_examples()
  ld = _loader(process_index=1, process_count=2)
  for k, batch in enumerate(_take(iter(ld), 7)):
    ids = grain_loader.permute(ld.positions(k), N, seed=7)
    rows, slots = np.nonzero(batch["masked_lm_weights"])
    unmasked = batch["input_ids"].copy()
    unmasked[rows, batch["masked_lm_positions"][rows, slots]] = batch["masked_lm_ids"][
        rows, slots]
    np.testing.assert_array_equal(unmasked, examples["input_ids"][ids])
    for key in ("token_type_ids", "attention_mask", "next_sentence_label"):
      np.testing.assert_array_equal(batch[key], examples[key][ids], err_msg=key)


def test_loader_is_deterministic_and_masks_dynamically():
  assert_same_batches(_take(iter(_loader()), 7), _take(iter(_loader()), 7))
  ld = _loader(shuffle=False, global_batch_size=N)  # one batch per epoch
  first, second = ld.get_batch(0), ld.get_batch(1)
  np.testing.assert_array_equal(first["token_type_ids"], second["token_type_ids"])
  assert (first["masked_lm_positions"] != second["masked_lm_positions"]).any()
  assert (_loader().get_batch(0)["input_ids"] != _loader(seed=8).get_batch(0)[
      "input_ids"]).any()


def test_loader_restore_continues_exactly():
  ld = _loader()
  it = iter(ld)
  _take(it, 3)
  state = ld.state()
  assert state == {"batch": 3, "seed": 7, "num_examples": N, "global_batch_size": 8}
  expected = _take(it, 4)  # crosses into epoch 1
  assert ld.state()["batch"] == 7
  resumed = _loader()
  resumed.restore(state)
  assert_same_batches(_take(iter(resumed), 4), expected)
  with pytest.raises(ValueError, match="other data or settings"):
    _loader(seed=8).restore(state)


def test_two_processes_split_the_global_batch():
  single = _take(iter(_loader()), 6)
  halves = [_take(iter(_loader(process_index=p, process_count=2)), 6) for p in (0, 1)]
  for whole, first, second in zip(single, *halves):
    for key in whole:
      np.testing.assert_array_equal(
          np.concatenate([first[key], second[key]]), whole[key], err_msg=key)


def test_loader_errors():
  with pytest.raises(ValueError, match="global_batch_size"):
    _loader(global_batch_size=7, process_count=2)
  with pytest.raises(ValueError, match="global_batch_size.*corpus too small for one batch of 64"):
    _loader(global_batch_size=64)
  examples = _synthetic_examples()
  del examples["attention_mask"]
  with pytest.raises(ValueError, match="attention_mask"):
    grain_loader.GrainPretrainingLoader(examples, 8, 7, MASKER)
