"""bert_jax.storage: atomic writes locally and on the GCS emulator."""
import os

import pytest

from bert_jax import storage
from tests.gcs_fixture import gcs_bucket, gcs_server  # noqa: F401  (fixtures)


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
  target = tmp_path / "config.json"
  storage.write_json_atomic(target, {"a": 1})

  def fail(*_):
    raise OSError("disk full")
  monkeypatch.setattr(os, "replace", fail)
  with pytest.raises(OSError, match="disk full"):
    storage.write_json_atomic(target, {"a": 2})
  assert storage.read_json(target) == {"a": 1}
  assert os.listdir(tmp_path) == ["config.json"]


def test_atomic_dir_local(tmp_path):
  dst = tmp_path / "out"
  with pytest.raises(RuntimeError):
    with storage.atomic_dir(str(dst)) as tmp:
      storage.write_text_atomic(os.path.join(tmp, "a.txt"), "x")
      raise RuntimeError
  assert os.listdir(tmp_path) == []
  with storage.atomic_dir(str(dst)) as tmp:
    storage.write_text_atomic(os.path.join(tmp, "a.txt"), "x")
  assert os.listdir(tmp_path) == ["out"]
  assert (dst / "a.txt").read_text() == "x"
  with pytest.raises(FileExistsError):
    with storage.atomic_dir(str(dst)):
      pass


def test_is_remote_and_join_never_make_a_local_gs_dir(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert storage.is_remote("gs://b/x") and not storage.is_remote("/tmp/x")
  assert storage.join("gs://b/run", "config.json") == "gs://b/run/config.json"
  assert not os.path.exists(tmp_path / "gs:")


def test_remote_writes_and_dirs(gcs_bucket, tmp_path, monkeypatch):  # noqa: F811
  monkeypatch.chdir(tmp_path)
  p = storage.join(gcs_bucket, "sub", "x.json")
  storage.write_json_atomic(p, {"a": 1})
  assert storage.exists(p) and storage.read_json(p) == {"a": 1}
  storage.write_bytes_atomic(p, b'{"a": 2}')
  assert storage.read_json(p) == {"a": 2}
  dst = storage.join(gcs_bucket, "model")
  with pytest.raises(RuntimeError):
    with storage.atomic_dir(dst) as tmp:
      storage.write_text_atomic(storage.join(tmp, "a.txt"), "x")
      raise RuntimeError
  assert not storage.exists(dst)
  with storage.atomic_dir(dst) as tmp:
    storage.write_text_atomic(storage.join(tmp, "d", "a.txt"), "x")
  assert storage.path(dst, ).joinpath("d", "a.txt").read_text() == "x"
  names = sorted(q.name for q in storage.path(gcs_bucket).iterdir())
  assert names == ["model", "sub"]
  with storage.local_copy(dst) as local:
    assert open(os.path.join(local, "d", "a.txt")).read() == "x"
  assert not os.path.exists(tmp_path / "gs:")


def test_unserialisable_json_keeps_the_old_file(tmp_path):
  target = tmp_path / "results.json"
  storage.write_json_atomic(target, {"a": 1})
  with pytest.raises(TypeError):
    storage.write_json_atomic(target, {"a": object()})
  assert storage.read_json(target) == {"a": 1}
  assert os.listdir(tmp_path) == ["results.json"]


def test_remote_failed_write_keeps_the_old_object_and_copies_cross_storage(
    gcs_bucket, tmp_path, monkeypatch):  # noqa: F811
  monkeypatch.chdir(tmp_path)
  p = storage.join(gcs_bucket, "a.txt")
  storage.write_text_atomic(p, "old")
  with pytest.raises(RuntimeError):
    with storage.open_atomic(p) as f:
      f.write(b"new")
      raise RuntimeError
  assert storage.path(p).read_text() == "old"
  local = tmp_path / "b.txt"
  local.write_text("local")
  storage.copy_file(local, storage.join(gcs_bucket, "d", "b.txt"))   # local -> remote
  storage.copy_file(storage.join(gcs_bucket, "d", "b.txt"), tmp_path / "c.txt")
  assert (tmp_path / "c.txt").read_text() == "local"
  assert sorted(os.listdir(tmp_path)) == ["b.txt", "c.txt"]   # no local `gs:` folder


def test_workdir_names_its_files_without_a_local_gs_dir(tmp_path, monkeypatch):
  from bert_jax import workdir
  monkeypatch.chdir(tmp_path)
  assert str(workdir.checkpoints("gs://b/run")) == "gs://b/run/checkpoints"
  assert str(workdir.epoch_predictions("gs://b/run", 2)) == "gs://b/run/predictions/epoch_2"
  assert str(workdir.trained_tokenizer("run")) == str(tmp_path / "run/tokenizer/spm.model")
  assert workdir.tokenizer_entry("/x/vocab.txt") == "tokenizer/vocab.txt"
  assert os.listdir(tmp_path) == []
