"""One path abstraction for every file the project reads or writes: `etils.epath`.

`path(p)` turns a string (local, or `gs://bucket/...`) into an `epath.Path`; the
write helpers keep "a kill never leaves half a file" on both kinds of storage:

- local paths: write a temporary sibling, then `os.replace` (atomic on POSIX);
- object stores (`gs://`, `s3://`): one object upload is atomic by itself (readers
  see the old object or the new one, never a part), so the bytes are written to
  the final name directly; no temporary object is left behind.

`atomic_dir` writes a directory into a temporary sibling and renames it into place.
Locally that rename is atomic. On an object store a directory "rename" is a copy of
every object then a delete: a reader may see a partly copied `dst` while it runs,
and a kill during it may leave one; the temporary sibling keeps a complete copy, and
`dst` is only claimed (non-empty) once the copy began, so a rerun stops rather than
trusting it. Write a marker file last when a reader must know a remote dir is whole.

The gfile (TensorFlow) backend of epath is not used for `gs://`: `EPATH_USE_TF` is
set to `false` on import, so epath takes its fsspec backend (`gcsfs`), which honours
`STORAGE_EMULATOR_HOST` (the tests' emulator) as well as real GCS.
"""

from __future__ import annotations

import atexit
import contextlib
import glob as glob_lib
import io
import json
import os
import shutil
import tempfile
import uuid
from typing import IO, Iterator

os.environ.setdefault("EPATH_USE_TF", "false")

from etils import epath  # pylint: disable=g-import-not-at-top,wrong-import-position

PathLike = str | os.PathLike
REMOTE_PREFIXES = ("gs://", "s3://", "az://", "hf://")
_CHUNK = 8 << 20   # bytes per read of a streamed copy


def path(p: PathLike) -> epath.Path:
  """`p` as an `epath.Path` (local paths and `gs://...` alike)."""
  return epath.Path(p)


def is_remote(p: PathLike) -> bool:
  """Whether `p` names an object store (`gs://`, `s3://`, ...) rather than a local path."""
  return os.fspath(p).startswith(REMOTE_PREFIXES)


def exists(p: PathLike) -> bool:
  """Whether `p` exists (file or directory), local or remote."""
  return path(p).exists()


def join(p: PathLike, *parts: str) -> str:
  """`p / parts` as a string; never `os.path.abspath` (that would turn `gs://b` into `cwd/gs:/b`)."""
  return os.fspath(path(p).joinpath(*parts))


def absolute(p: PathLike) -> epath.Path:
  """`p` as an absolute `epath.Path`: local paths through `os.path.abspath`, remote as written."""
  return path(p if is_remote(p) else os.path.abspath(p))


def glob(pattern: str) -> list[str]:
  """Sorted paths matching `pattern` (`*`, `?`, `[...]`, `**`), local or remote.

  Local patterns go through `glob.glob` (`~` expanded, `**` recursive); a remote one is
  split at its first wildcard component and matched by the store's own listing.
  """
  if not is_remote(pattern):
    return sorted(glob_lib.glob(os.path.expanduser(pattern), recursive=True))
  parts = pattern.split("/")
  first = next((i for i, part in enumerate(parts) if glob_lib.has_magic(part)), None)
  if first is None:
    return [pattern] if exists(pattern) else []
  root, rest = "/".join(parts[:first]), "/".join(parts[first:])
  return sorted(os.fspath(p) for p in path(root).glob(rest))


def same_path(a: PathLike, b: PathLike) -> bool:
  """Whether `a` and `b` name one file (local paths compared absolute, remote as written)."""
  if is_remote(a) or is_remote(b):
    return os.fspath(a) == os.fspath(b)
  return os.path.abspath(a) == os.path.abspath(b)


def open_text(p: PathLike, mode: str = "r", encoding: str = "utf-8",
              newline: str | None = None) -> IO[str]:
  """`p` opened in text `mode` ('r', 'w', 'a'; 'a' only locally), decoded as
  `encoding` whatever the locale (epath's own `open` drops `encoding` and `newline`)."""
  return io.TextIOWrapper(path(p).open(mode + "b"), encoding=encoding, newline=newline)


@contextlib.contextmanager
def open_atomic(p: PathLike, text: bool = False) -> Iterator[IO]:
  """A file to write (binary; UTF-8 text with `text`) that becomes `p` whole when the
  block succeeds.

  Locally: a temporary sibling, then `os.replace`; a failure removes the temporary and
  leaves the old file intact. Remote: one object upload, sent when the block ends (an
  upload is atomic by itself); a failure abandons it, so the old object stays.
  """
  if text:
    with open_atomic(p) as raw:
      wrapper = io.TextIOWrapper(raw, encoding="utf-8")
      yield wrapper
      wrapper.detach()   # flushes; the binary file is closed (and placed) below
    return
  target = path(p)
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(p):
    f = target.open("wb")
    try:
      yield f
    except BaseException:
      f.discard()     # fsspec: cancels a multi-part upload already begun, and
      f.closed = True  # keeps close() from sending what is buffered
      raise
    f.close()
    return
  directory = os.path.dirname(os.path.abspath(p))
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(p) + ".tmp")
  try:
    with os.fdopen(fd, "wb") as f:
      yield f
    os.replace(tmp, p)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def write_bytes_atomic(p: PathLike, data: bytes) -> None:
  """Writes `data` to `p` so that readers see the old content or the new, never a part
  (`open_atomic`)."""
  with open_atomic(p) as f:
    f.write(data)


def write_text_atomic(p: PathLike, text: str) -> None:
  """`write_bytes_atomic` of UTF-8 `text`."""
  write_bytes_atomic(p, text.encode("utf-8"))


def write_json_atomic(p: PathLike, obj) -> None:
  """`obj` as indented, key-sorted JSON (floats for numpy scalars), written atomically."""
  write_text_atomic(p, json.dumps(obj, indent=2, sort_keys=True, default=float))


def read_json(p: PathLike):
  """The JSON value stored at `p`."""
  return json.loads(path(p).read_text(encoding="utf-8"))


def copy_file(src: PathLike, dst: PathLike) -> None:
  """Copies the file `src` to `dst` (either local or remote), streamed, through
  `open_atomic`: never through the source backend's own `copy` (a local backend would
  write a remote `dst` into a local folder named `gs:`)."""
  with path(src).open("rb") as r, open_atomic(dst) as w:
    shutil.copyfileobj(r, w, _CHUNK)


def copy_tree(src: PathLike, dst: PathLike) -> None:
  """Copies the directory tree `src` into `dst` (each file by `copy_file`), between
  any two kinds of storage."""
  _copy_tree(path(src), path(dst))


def _is_nonempty(target: epath.Path) -> bool:
  if not target.exists():
    return False
  return not target.is_dir() or any(True for _ in target.iterdir())


@contextlib.contextmanager
def atomic_dir(dst: PathLike, error=FileExistsError):
  """Yields a temporary sibling of `dst` (a string), moved to `dst` if the block succeeds.

  Args:
    dst: the directory to create; it must not exist or be empty.
    error: the exception class raised when `dst` exists and is not empty.

  Locally the move is one `rename` (atomic). Remote, it is a copy of each object then
  a delete of the temporary (see the module docstring for what a reader may see).
  A failing block removes the temporary and leaves `dst` as it was.
  """
  target = path(dst if is_remote(dst) else os.path.abspath(dst))
  if _is_nonempty(target):
    raise error(f"--dst {target} already exists and is not empty")
  target.parent.mkdir(parents=True, exist_ok=True)
  if is_remote(dst):
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
  else:
    tmp = path(tempfile.mkdtemp(dir=os.fspath(target.parent), prefix=f".{target.name}.tmp-"))
  try:
    yield os.fspath(tmp)
    if is_remote(dst):
      _copy_tree(tmp, target)
      tmp.rmtree(missing_ok=True)
    else:
      _default_permissions(os.fspath(tmp))  # mkdtemp (and some writers) use owner-only modes
      if target.is_dir():
        target.rmdir()  # empty (checked above)
      os.rename(tmp, target)
  except BaseException:
    if tmp.exists():
      tmp.rmtree(missing_ok=True)
    raise


def _copy_tree(src: epath.Path, dst: epath.Path) -> None:
  """Copies the tree `src` to `dst` (iterdir, not walk: fsspec's walk drops `gs://`)."""
  dst.mkdir(parents=True, exist_ok=True)
  for child in src.iterdir():
    if child.is_dir():
      _copy_tree(child, dst / child.name)
    else:
      copy_file(child, dst / child.name)


def _default_permissions(root: str) -> None:
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(root, 0o777 & ~umask)
  for directory, dirs, files in os.walk(root):
    for d in dirs:
      os.chmod(os.path.join(directory, d), 0o777 & ~umask)
    for f in files:
      os.chmod(os.path.join(directory, f), 0o666 & ~umask)


_STAGED = contextlib.ExitStack()   # staged copies, removed when the process exits
atexit.register(_STAGED.close)


def staged(p: PathLike) -> str:
  """`local_copy(p)` kept until the process exits, for readers that outlive one
  block (the loader's ArrayRecord shards); `p` itself when local."""
  return _STAGED.enter_context(local_copy(p))


@contextlib.contextmanager
def local_copy(p: PathLike, cache_dir: PathLike | None = None):
  """Yields a local path holding `p`'s content: `p` itself when local.

  For C++ readers that only take local files (ArrayRecord, SentencePiece): a remote
  file or directory is copied (per host) into `cache_dir` (a fresh temp dir when
  None) and removed afterwards when the temp dir was ours.
  """
  if not is_remote(p):
    yield os.fspath(p)
    return
  src = path(p)
  own = cache_dir is None
  root = tempfile.mkdtemp(prefix="bert_jax_stage-") if own else os.fspath(cache_dir)
  local = path(root) / src.name
  try:
    if src.is_dir():
      _copy_tree(src, local)
    else:
      copy_file(src, local)
    yield os.fspath(local)
  finally:
    if own:
      path(root).rmtree(missing_ok=True)
