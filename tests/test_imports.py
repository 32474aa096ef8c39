"""No import circles among bert_jax's modules, so each folder reads bottom-up.

The graph comes from the source alone (`ast`, nothing imported, no jax): every
`import bert_jax.x` and `from bert_jax.x import y` (y a submodule when one of that name
exists, else a name in x), relative ones resolved against their package, at module level
and inside functions or `if TYPE_CHECKING:` alike: an import put in a function to
dodge a circle is still a circle. An edge goes to the module named and to the packages
above it that do not hold the importer (importing `bert_jax.inference.tokenizer` from
`bert_jax.train` runs `bert_jax/inference/__init__.py` first; a package importing its
own submodules is not a circle).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = "bert_jax"
ROOT = pathlib.Path(__file__).resolve().parent.parent / PACKAGE


def module_files(root: pathlib.Path = ROOT) -> dict[str, pathlib.Path]:
  """{dotted module name: file} for every .py file of the package."""
  out = {}
  for path in sorted(root.rglob("*.py")):
    parts = path.relative_to(root.parent).with_suffix("").parts
    if parts[-1] == "__init__":
      parts = parts[:-1]
    out[".".join(parts)] = path
  return out


def imported_modules(name: str, path: pathlib.Path, modules) -> set[str]:
  """The package's modules that module `name` (file `path`) imports, anywhere in it,
  with the packages above each that the import runs (those not holding `name`)."""
  is_package = path.name == "__init__.py"
  found = set()
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:   # relative: from the package holding this module
        base = name.split(".")
        base = base[:len(base) - node.level + (1 if is_package else 0)]
        base = ".".join(base + ([node.module] if node.module else []))
      else:
        base = node.module or ""
      for a in node.names:   # a submodule of that name, else a name defined in `base`
        found.add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base)
  found = {m for m in found if m in modules}
  holders = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
  above = {".".join(m.split(".")[:i]) for m in found for i in range(1, m.count(".") + 1)}
  return (found | (above & modules.keys())) - holders


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
  """{module: the package's modules it imports}."""
  modules = module_files(root)
  return {name: imported_modules(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
  """One cycle as [a, b, ..., a], or None; depth-first, in sorted order (stable)."""
  state: dict[str, int] = {}   # 1 on the current path, 2 done
  path: list[str] = []

  def visit(node):
    state[node] = 1
    path.append(node)
    for nxt in sorted(graph.get(node, ())):
      if state.get(nxt) == 1:
        return path[path.index(nxt):] + [nxt]
      if nxt not in state:
        cycle = visit(nxt)
        if cycle:
          return cycle
    path.pop()
    state[node] = 2
    return None

  for node in sorted(graph):
    if node not in state:
      cycle = visit(node)
      if cycle:
        return cycle
  return None


def assert_no_cycle(root: pathlib.Path = ROOT) -> None:
  """Fails naming one cycle when the package under `root` has any."""
  cycle = find_cycle(import_graph(root))
  if cycle:
    pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_cycle_finder_finds_a_cycle():
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"a"}}) == ["a", "a"]
  assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_graph_sees_every_kind_of_import(tmp_path):
  pkg = tmp_path / PACKAGE
  (pkg / "sub").mkdir(parents=True)
  (pkg / "__init__.py").write_text("")
  (pkg / "sub" / "__init__.py").write_text("from . import low\n")
  (pkg / "sub" / "low.py").write_text(
      "def f():\n  from bert_jax.sub import high  # in a function\n")
  (pkg / "sub" / "high.py").write_text("import os\nfrom ..top import NAME\n")
  (pkg / "top.py").write_text(
      "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n  import bert_jax.sub\n")
  (pkg / "side.py").write_text("from bert_jax.sub.high import NAME  # runs sub/__init__\n")
  graph = import_graph(pkg)
  assert graph == {"bert_jax": set(), "bert_jax.sub": {"bert_jax.sub.low"},
                   "bert_jax.sub.low": {"bert_jax.sub.high"},
                   "bert_jax.sub.high": {"bert_jax.top"},
                   "bert_jax.top": {"bert_jax.sub"},
                   "bert_jax.side": {"bert_jax.sub", "bert_jax.sub.high"}}
  assert find_cycle(graph) == ["bert_jax.sub", "bert_jax.sub.low", "bert_jax.sub.high",
                               "bert_jax.top", "bert_jax.sub"]


def test_a_planted_cycle_fails(tmp_path):
  pkg = tmp_path / PACKAGE
  pkg.mkdir()
  (pkg / "__init__.py").write_text("")
  (pkg / "one.py").write_text("from bert_jax import two\n")
  (pkg / "two.py").write_text("import numpy\n\n\ndef f():\n  import bert_jax.one\n")
  with pytest.raises(pytest.fail.Exception,
                     match="bert_jax.one -> bert_jax.two -> bert_jax.one"):
    assert_no_cycle(pkg)
  (pkg / "two.py").write_text("import numpy\n")
  assert_no_cycle(pkg)


def test_bert_jax_has_no_import_cycle():
  graph = import_graph()
  assert len(graph) > 50 and "bert_jax.train.trainer" in graph
  assert_no_cycle()
