"""A local GCS emulator (`gcp-storage-emulator`) for the `gs://` tests.

`gcs_bucket` starts the emulator in this process on a free 127.0.0.1 port, creates a
bucket, points gcsfs (`STORAGE_EMULATOR_HOST`, anonymous token) and tensorstore, which
orbax writes arrays with (`TENSORSTORE_GCS_HTTP_URL`, a fixed test token), at it and
yields `gs://<bucket>/<random>`. Subprocesses inherit the environment. Skips when
gcsfs or the emulator is not importable.
"""
import logging
import os
import socket
import threading
import uuid

import pytest

BUCKET = "bert-jax-test"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def emulator_env(port: int) -> dict[str, str]:
  """The variables that send gcsfs (and epath's fsspec backend) and tensorstore's
  `gcs` kvstore driver to the emulator."""
  return {"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{port}",
          "TENSORSTORE_GCS_HTTP_URL": f"http://127.0.0.1:{port}",
          "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test",   # tensorstore: no credential lookup
          "GCSFS_DEFAULT_PROJECT": "test", "EPATH_USE_TF": "false",
          # gcsfs's default ExtendedGcsFileSystem probes buckets over gRPC (zonal /
          # HNS buckets), which the HTTP-only emulator cannot answer: it hangs.
          "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "GCSFS_TOKEN": "anon"}


def _send_generation_headers(server_lib) -> None:
  """Adds `x-goog-generation` to the emulator's media downloads, as GCS sends it.

  gcp-storage-emulator omits it; tensorstore (orbax's array writer) reads an object's
  generation from it and fails with "Malformed StorageGeneration" without it.
  """
  objects = server_lib.objects
  if getattr(objects.download, "sends_generation", False):
    return
  plain = objects.download

  def download(request, response, storage, *args, **kwargs):
    plain(request, response, storage, *args, **kwargs)
    try:
      obj = storage.get_file_obj(request.params["bucket_name"],
                                 request.params["object_id"])
    except Exception:  # pylint: disable=broad-except  (a 404 is already set)
      return
    response["x-goog-generation"] = str(obj["generation"])
    response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))

  download.sends_generation = True
  objects.download = download   # objects.get(alt=media) looks the name up
  for _, handlers in server_lib.HANDLERS:
    for method, handler in handlers.items():
      if handler is plain:
        handlers[method] = download


@pytest.fixture(scope="session")
def gcs_server():
  """(port) of a running in-memory emulator holding bucket `BUCKET`."""
  port = _free_port()
  saved = {k: os.environ.get(k) for k in emulator_env(port)}
  os.environ.update(emulator_env(port))  # before gcsfs is imported (it reads one)
  pytest.importorskip("gcsfs", reason="gcsfs is not installed: no gs:// tests")
  server_lib = pytest.importorskip(
      "gcp_storage_emulator.server", reason="gcp-storage-emulator is not installed")
  _send_generation_headers(server_lib)
  server = server_lib.create_server("127.0.0.1", port, in_memory=True,
                                    default_bucket=BUCKET)
  thread = threading.Thread(target=server.start, daemon=True)
  thread.start()
  server._api.is_running.wait(10)  # pylint: disable=protected-access
  # Clients that close a connection early (tensorstore does) make the stdlib server
  # print a BrokenPipeError traceback per request: noise, not a failure.
  server._api._httpd.handle_error = lambda *_: None  # pylint: disable=protected-access
  logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)  # 404s: expected
  import fsspec  # pylint: disable=import-outside-toplevel
  fsspec.config.conf.setdefault("gcs", {})["token"] = "anon"
  yield port
  server.stop()
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


@pytest.fixture
def gcs_bucket(gcs_server):  # pylint: disable=redefined-outer-name,unused-argument
  """A fresh `gs://bucket/<random>` prefix on the emulator."""
  return f"gs://{BUCKET}/{uuid.uuid4().hex[:8]}"
