"""One table of rules over parameter paths, and the helpers every consumer applies.

A parameter is addressed by its '/'-joined path in the tree
('bert/encoder/layer_3/attention/query/kernel'). `RULES` maps path patterns to
properties, in the manner of big_vision's `config.wd_mults` applied by
`utils.tree_map_with_regex`: for each property the first row that matches the whole
path and names that property decides. The properties:

  decay    weight decay applies (kernels, embeddings) or not (biases, and every
           parameter of a norm: a module whose name ends in 'norm');
           the optimizer's mask (`train/optim.py`).
  depth    the depth of the parameter for layer-wise LR decay (`train/optim.py`):
           0 = embeddings, i + 1 = encoder layer i, 'stacked' = a scanned layer
           (depths 1..N along its leading [num_layers] axis), 'shared' = a parameter
           that every layer uses (`model.share_layers`: the top layer's depth N),
           'top' = N + 1 (final norm, pooler, task and pretraining heads).
  scanned  the path of the parameter in the scanned layout (`model.scan_layers`),
           whose leading axis stacks the layers (`to_scanned`, `to_per_layer`).
  load     how pretrained weights enter a task model (`merge_pretrained`): 'required'
           (the encoder), 'optional' (the pooler: a bare HF BertModel may lack it) or
           'fresh' (task heads, always newly initialised).
  hf, hf_kind
           the Hugging Face `BertForPreTraining` name of the module and how its arrays
           are laid out there (`bert_jax/convert/hf.py` applies the kind); the rows
           use the per-layer layout, the converters relayout first.

Row patterns are templates: `{name}` stands for the regular expression
`PLACEHOLDERS[name]` and is captured, so the same template formats a path back from
the groups (the HF names map both ways with one row). A switch that adds a parameter
matches the generic rows by its name (a kernel decays, a bias or a norm's parameter
does not; everything under `encoder/layer_{i}` stacks when scanned) and needs no row
of its own; only a parameter HF `BertModel` has a name for gets an `hf` row.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import numpy as np

PLACEHOLDERS = {
    "pre": r"(?:[^/]+/)*?",          # any leading modules ('', 'bert/', 'params/bert/')
    "layer": r"\d+",
    "rest": r".+",
    "leaf": r"[^/.]+",
    "qkv": r"query|key|value",
    "emb": r"word|position|token_type",
}


def _compile(template: str, literal: bool = False) -> re.Pattern:
  """'bert/encoder/layer_{layer}/{rest}' -> a regex with a named group per {name}.

  The text between placeholders is a regex for path rows, and literal text for
  `literal=True` (HF names, whose dots are dots).
  """
  parts = re.split(r"\{(\w+)\}", template)
  out = []
  for i, part in enumerate(parts):
    if i % 2:
      out.append(f"(?P<{part}>{PLACEHOLDERS[part]})")
    else:
      out.append(re.escape(part) if literal else part)
  return re.compile("".join(out))


@dataclasses.dataclass(frozen=True)
class Rule:
  """`pattern` (a template, see the module docstring) -> `props`."""
  pattern: str
  props: Mapping[str, Any]

  @functools.cached_property
  def regex(self) -> re.Pattern:
    return _compile(self.pattern)


def _rule(pattern: str, **props) -> Rule:
  return Rule(pattern, props)


# bert_jax module (per-layer layout) <-> HF BertForPreTraining module, and the layout
# of its arrays there: 'embedding' (same), 'linear' (torch [out, in] weight), 'norm'
# (weight/bias for scale/bias), 'heads_in' (q/k/v: [embed, heads, kv] <-> [heads*kv,
# embed]), 'heads_out' ([heads, kv, embed] <-> [embed, heads*kv]), 'array' (same).
_HF_MODULES = (
    ("bert/embeddings/{emb}_embeddings", "bert.embeddings.{emb}_embeddings", "embedding"),
    ("bert/embeddings/layer_norm", "bert.embeddings.LayerNorm", "norm"),
    ("bert/encoder/layer_{layer}/attention/{qkv}",
     "bert.encoder.layer.{layer}.attention.self.{qkv}", "heads_in"),
    ("bert/encoder/layer_{layer}/attention/output",
     "bert.encoder.layer.{layer}.attention.output.dense", "heads_out"),
    ("bert/encoder/layer_{layer}/attention_layer_norm",
     "bert.encoder.layer.{layer}.attention.output.LayerNorm", "norm"),
    ("bert/encoder/layer_{layer}/intermediate",
     "bert.encoder.layer.{layer}.intermediate.dense", "linear"),
    ("bert/encoder/layer_{layer}/output", "bert.encoder.layer.{layer}.output.dense",
     "linear"),
    ("bert/encoder/layer_{layer}/output_layer_norm",
     "bert.encoder.layer.{layer}.output.LayerNorm", "norm"),
    ("bert/pooler", "bert.pooler.dense", "linear"),
    ("mlm/transform", "cls.predictions.transform.dense", "linear"),
    ("mlm/transform_layer_norm", "cls.predictions.transform.LayerNorm", "norm"),
    ("mlm/decoder", "cls.predictions.decoder", "linear"),   # model.tie_word_embeddings=False
    ("nsp", "cls.seq_relationship", "linear"),
)

RULES: tuple[Rule, ...] = (
    # Converter names: one row per HF module (its leaves: kernel/bias/scale/embedding).
    *(_rule(ours + "/{leaf}", hf=theirs, hf_kind=kind) for ours, theirs, kind in _HF_MODULES),
    _rule("mlm/output_bias", hf="cls.predictions.bias", hf_kind="array"),
    # Weight decay: not on the parameters of norms (any module named '*norm', whatever
    # its leaves: `models/bert.py: layer_norm` holds every norm to that name) nor on
    # biases (BERT's AdamW exclusions). By module, not by the leaf name 'scale', so a
    # parameter named 'scale' elsewhere decays and a norm's other leaves do not.
    _rule(r"(?:.*/)?[^/]*norm/[^/]+", decay=False),
    _rule(r"(?:.*/)?(?:bias|output_bias)", decay=False),
    # Depth, layout and loading.
    _rule("{pre}embeddings/{rest}", depth=0, load="required"),
    _rule("{pre}encoder/layer_{layer}/{rest}", depth="layer", load="required",
          scanned="{pre}encoder/layers/{rest}"),
    _rule("{pre}encoder/layers/{rest}", depth="stacked", load="required"),
    _rule("{pre}encoder/shared/{rest}", depth="shared", load="required"),
    _rule("{pre}encoder/{rest}", load="required"),          # the pre-LN final norm
    _rule("{pre}pooler/{rest}", load="optional"),
    _rule(r".*", decay=True, depth="top", load="fresh"),
)

_MISSING = object()


def lookup(path: str, prop: str, default: Any = _MISSING) -> tuple[Any, re.Match | None]:
  """(value, match) of the first row of `RULES` that matches `path` and names `prop`."""
  for rule in RULES:
    if prop in rule.props:
      m = rule.regex.fullmatch(path)
      if m:
        return rule.props[prop], m
  if default is _MISSING:
    raise KeyError(f"no rule in bert_jax/models/params.py gives {prop!r} for {path}")
  return default, None


# ------------------------------------------------------------------- tree helpers


def key_name(key) -> str:
  return str(getattr(key, "key", getattr(key, "name", getattr(key, "idx", key))))


def path_str(keypath) -> str:
  """A jax key path -> 'a/b/c'."""
  return "/".join(key_name(k) for k in keypath)


def tree_map_with_rules(fn: Callable[[Any, Any, str, re.Match | None], Any], tree: Any,
                        prop: str) -> Any:
  """fn(leaf, value, path, match) over every leaf, `value` being its `prop` by `RULES`.

  The one way consumers read the table (big_vision's `tree_map_with_regex` shape).
  """
  def one(keypath, leaf):
    path = path_str(keypath)
    value, m = lookup(path, prop)
    return fn(leaf, value, path, m)
  return jax.tree_util.tree_map_with_path(one, tree)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
  """('a/b/c', leaf) over the nested Mappings of `tree` (other values are leaves)."""
  for k, v in tree.items():
    path = f"{prefix}/{k}" if prefix else str(k)
    if isinstance(v, Mapping):
      yield from flatten(v, path)
    else:
      yield path, v


def unflatten(flat: Mapping[str, Any]) -> dict:
  tree: dict = {}
  for path, value in flat.items():
    *parents, leaf = path.split("/")
    node = tree
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = value
  return tree


# -------------------------------------------------------------------- weight decay


def weight_decay_mask(params) -> Any:
  """True for the leaves that get weight decay (optax `mask=`)."""
  return tree_map_with_rules(lambda leaf, decay, *_: bool(decay), params, "decay")


# ----------------------------------------------------------------- layer-wise LR


def depth_of(value, m: re.Match | None, num_layers: int, leaf) -> Any:
  """A `depth` rule value -> an int, or an int array [num_layers, 1, ...] (scanned)."""
  if value == "layer":
    return int(m["layer"]) + 1
  if value == "stacked":
    return np.arange(1, num_layers + 1).reshape((-1,) + (1,) * (np.ndim(leaf) - 1))
  if value == "shared":
    return num_layers
  if value == "top":
    return num_layers + 1
  return int(value)


def lr_depth_scales(params, num_layers: int, decay: float) -> Any:
  """Update scale per leaf for layer-wise LR decay: decay ** (num_layers + 1 - depth).

  Scanned layers get one scale per layer along their stacked axis.
  """
  def scale(leaf, value, path, m):
    depth = depth_of(value, m, num_layers, leaf)
    if np.ndim(depth) and np.shape(leaf)[:1] != (num_layers,):
      raise ValueError(f"{path}: a scanned layer with leading axis {np.shape(leaf)[:1]}, "
                       f"but model.num_layers={num_layers}")
    return jnp.asarray(decay ** (num_layers + 1 - np.asarray(depth)), jnp.float32)
  return tree_map_with_rules(scale, params, "depth")


# ---------------------------------------------------------------- scanned layout


def _stack(xs: list) -> Any:
  if not all(hasattr(x, "shape") for x in xs):
    return xs[0]  # optimizer placeholders (MaskedNode, None): one stands for all
  if all(isinstance(x, np.ndarray) for x in xs):
    return np.stack(xs)
  return jnp.stack(xs)


def _relayout(tree: Any, flat_fn: Callable[[dict], dict]) -> Any:
  """Applies `flat_fn` to every '/'-flattened Mapping in `tree` (params or optimizer
  moments nested in tuples / namedtuples / lists)."""
  if isinstance(tree, Mapping):
    flat = {p: _relayout(v, flat_fn) for p, v in flatten(tree)}
    return unflatten(flat_fn(flat))
  if isinstance(tree, tuple) and hasattr(tree, "_fields"):
    return type(tree)(*(_relayout(x, flat_fn) for x in tree))
  if isinstance(tree, (tuple, list)):
    return type(tree)(_relayout(x, flat_fn) for x in tree)
  return tree


def _layout_rows() -> list[tuple[Rule, re.Pattern]]:
  """(per-layer row, regex of its scanned template) for each row naming `scanned`."""
  return [(r, _compile(r.props["scanned"])) for r in RULES if "scanned" in r.props]


def _to_scanned_flat(flat: dict) -> dict:
  out, groups = {}, {}
  for path, leaf in flat.items():
    for rule, _ in _layout_rows():
      m = rule.regex.fullmatch(path)
      if m:
        target = rule.props["scanned"].format(**m.groupdict())
        groups.setdefault(target, {})[int(m["layer"])] = leaf
        break
    else:
      out[path] = leaf
  for target, by_layer in groups.items():
    if sorted(by_layer) != list(range(len(by_layer))):
      raise ValueError(f"{target}: layers are not numbered 0..{len(by_layer) - 1}: "
                       f"{sorted(by_layer)}")
    out[target] = _stack([by_layer[i] for i in range(len(by_layer))])
  return out


def _to_per_layer_flat(flat: dict) -> dict:
  out = {}
  stacked = [x.shape[0] for p, x in flat.items() if hasattr(x, "shape")
             and any(scanned.fullmatch(p) for _, scanned in _layout_rows())]
  for path, leaf in flat.items():
    for rule, scanned in _layout_rows():
      m = scanned.fullmatch(path)
      if m:
        n = leaf.shape[0] if hasattr(leaf, "shape") else stacked[0]
        for i in range(n):  # a placeholder (MaskedNode, None) stands for every layer
          value = leaf[i] if hasattr(leaf, "shape") else leaf
          out[rule.pattern.format(**{**m.groupdict(), "layer": i})] = value
        break
    else:
      out[path] = leaf
  return out


def is_scanned(tree: Any) -> bool:
  """True when a params tree (or state dict) holds scanned encoder layers."""
  if not isinstance(tree, Mapping):
    return False
  regexes = [scanned for _, scanned in _layout_rows()]
  return any(r.fullmatch(p) for p, _ in flatten(tree) for r in regexes)


def to_scanned(tree: Any) -> Any:
  """Per-layer `encoder/layer_{i}/...` leaves -> `encoder/layers/...` stacked on axis 0."""
  return _relayout(tree, _to_scanned_flat)


def to_per_layer(tree: Any) -> Any:
  """`encoder/layers/...` stacked leaves -> `encoder/layer_{i}/...` (the HF layout)."""
  return _relayout(tree, _to_per_layer_flat)


def in_layout(tree: Any, scanned: bool) -> Any:
  """`tree` (arrays or ShapeDtypeStructs) in the scanned or the per-layer layout."""
  if is_scanned(tree) == scanned:
    return tree
  convert = to_scanned if scanned else to_per_layer
  if any(isinstance(x, jax.ShapeDtypeStruct) for x in jax.tree_util.tree_leaves(tree)):
    return jax.eval_shape(convert, tree)
  return convert(tree)


# ---------------------------------------------------- pretrained weights -> task


def merge_pretrained(init: Mapping, loaded: Mapping | None, source: str = "checkpoint"
                     ) -> dict:
  """`init` (a task model's params) with its pretrained leaves taken from `loaded`.

  `loaded` may be in either layout; it is brought into `init`'s. Leaves whose `load`
  rule is 'required' must be in `loaded` with the same shape, 'optional' ones are
  taken when present, 'fresh' ones (task heads) keep their init. Arrays are placed
  on the sharding of the `init` leaf they replace. One error lists every mismatch.
  """
  if loaded is None:
    return dict(init)
  loaded = dict(flatten(in_layout(dict(loaded), is_scanned(init))))
  out, bad = {}, []
  used = set()
  for path, leaf in flatten(init):
    mode, _ = lookup(path, "load")
    if mode == "fresh" or (mode == "optional" and path not in loaded):
      out[path] = leaf
      continue
    if path not in loaded:
      bad.append(f"{path}: missing in the {source}")
      continue
    value = loaded[path]
    used.add(path)
    if tuple(np.shape(value)) != tuple(leaf.shape):
      bad.append(f"{path}: {source} shape {tuple(np.shape(value))}, model {leaf.shape}")
      continue
    value = jnp.asarray(value, leaf.dtype)
    out[path] = jax.device_put(value, leaf.sharding) if hasattr(leaf, "sharding") else value
  extra = sorted(p for p in loaded if p not in used and lookup(p, "load")[0] != "fresh")
  bad += [f"{p}: in the {source}, not in the model" for p in extra]
  if bad:
    raise ValueError(f"the {source} does not fit the task model ({len(bad)} mismatches; "
                     "another model size or switch?):\n  " + "\n  ".join(bad[:20]))
  return unflatten(out)


# ---------------------------------------------------------------- converter names


def hf_module(path: str) -> tuple[str, str, str] | None:
  """bert_jax leaf path -> (HF module name, kind, our leaf name), or None (no HF name)."""
  value, m = lookup(path, "hf", None)
  if m is None:
    return None
  kind, _ = lookup(path, "hf_kind")
  groups = m.groupdict()
  return value.format(**groups), kind, groups.get("leaf", "")


@functools.lru_cache(maxsize=None)
def _hf_rows() -> list[tuple[re.Pattern, Rule]]:
  return [(_compile(r.props["hf"], literal=True), r) for r in RULES if "hf" in r.props]


def path_from_hf(module: str) -> tuple[str, str] | None:
  """HF module name ('bert.encoder.layer.3.output.dense') -> (our module path, kind)."""
  for regex, rule in _hf_rows():
    m = regex.fullmatch(module)
    if m:
      ours = rule.pattern.rsplit("/{leaf}", 1)[0] if "{leaf}" in rule.pattern else rule.pattern
      return ours.format(**m.groupdict()), rule.props["hf_kind"]
  return None
