"""Tokenizers for exported HF directories: `transformers` loads them with our ids.

WordPiece (`vocab.txt`): `tokenizer_config.json` (BertTokenizer, `do_lower_case` as
our tokenizer resolves it: the source's tokenizer_config.json, else inferred from the
vocabulary) and a `tokenizer.json` built from the same `tokenizers` pipeline
`data/wordpiece.py` runs, with BERT's [CLS] A [SEP] B [SEP] template.

SentencePiece (`spm.model`): a `tokenizer.json` that reproduces it with the
`tokenizers` library — the unigram (or BPE) pieces and scores, byte fallback, and the
model's normalizer settings (dummy prefix, whitespace escaping, extra-whitespace
removal, precompiled character map) — and a `tokenizer_config.json` naming
`PreTrainedTokenizerFast`, so `AutoTokenizer` does not fall back to a WordPiece
`BertTokenizer` (which maps every word of a SentencePiece vocabulary to [UNK]).
Before anything is written, the built tokenizer encodes `CHECK_TEXTS` (English,
Chinese, Japanese, emoji, byte-fallback characters, odd whitespace) and must give
exactly SentencePiece's ids; otherwise the export fails naming the first text that
differs (e.g. for 'char'/'word' models, which are refused outright).

One difference remains by design: `transformers` matches the special strings
("[MASK]", "[SEP]", ...) inside raw text as special tokens, as HF users expect for
fill-mask; bert_jax tokenizes raw text as plain text (a corpus line cannot inject a
separator).
"""

from __future__ import annotations

import json
import os

from bert_jax import storage
from bert_jax.convert.common import ConversionError
from bert_jax.data.pieces import SPECIAL_TOKENS

CHECK_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "  leading and  double  spaces, trailing ",
    "Tabs\tand\nnewlines\r\n too",
    "北京是中国的首都，人口超过两千万。",
    "我爱自然语言处理！BERT模型很好用。",
    "日本語のテキストとカタカナ、ひらがな。",
    "Emoji 🙂🚀 and symbols ∑∫√ ©®",
    "Ünïcödé àccents naïve café Ångström",
    "def f(x):\n    return x ** 2  # code",
    "Zero\u200bwidth and non\u00a0breaking",
    "",
    "a",
)


def _special_tokens_config() -> dict:
  names = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token")
  return dict(zip(names, SPECIAL_TOKENS))


def _template(tok, ids: dict) -> None:
  from tokenizers import processors
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])


def _write_json(path: str, obj: dict) -> None:
  storage.write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False))


def _save(tok, directory: str) -> None:
  """`directory/tokenizer.json` (as `Tokenizer.save` writes it), local or remote."""
  storage.write_text_atomic(storage.join(directory, "tokenizer.json"),
                            tok.to_str(pretty=True))


def wordpiece_files(directory: str, vocab_path: str, model_max_length: int,
                    lowercase: bool | None = None) -> list[str]:
  """tokenizer.json + tokenizer_config.json + special_tokens_map.json for a vocab.txt
  (`lowercase`: what the model was trained with; None: read or inferred beside it)."""
  from tokenizers import AddedToken
  from bert_jax.data import wordpiece
  ours = wordpiece.WordPieceTokenizer.load(vocab_path, lowercase)
  tok = ours._tok  # noqa: SLF001  (the exact pipeline our WordPiece runs)
  ids = {t: getattr(ours, f"{t[1:-1].lower()}_id") for t in SPECIAL_TOKENS}
  tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS])
  _template(tok, ids)
  _save(tok, directory)
  _write_json(storage.join(directory, "tokenizer_config.json"), {
      "tokenizer_class": "BertTokenizer", "do_lower_case": ours.lowercase,
      "strip_accents": None, "tokenize_chinese_chars": True, "do_basic_tokenize": True,
      "model_max_length": model_max_length, **_special_tokens_config()})
  _write_json(storage.join(directory, "special_tokens_map.json"), _special_tokens_config())
  return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def sentencepiece_tokenizer(model_path: str):
  """A `tokenizers.Tokenizer` encoding as the SentencePiece model does (no specials)."""
  from sentencepiece import sentencepiece_model_pb2
  from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers
  proto = sentencepiece_model_pb2.ModelProto()
  proto.ParseFromString(storage.path(model_path).read_bytes())
  kind = sentencepiece_model_pb2.TrainerSpec.ModelType.Name(proto.trainer_spec.model_type)
  byte_fallback = proto.trainer_spec.byte_fallback
  vocab = [(p.piece, p.score) for p in proto.pieces]
  if kind == "UNIGRAM":
    tok = Tokenizer(models.Unigram(vocab, unk_id=proto.trainer_spec.unk_id,
                                   byte_fallback=byte_fallback))
  elif kind == "BPE":
    normal = {p.piece: (p.score, i) for i, p in enumerate(proto.pieces) if p.type == 1}
    ranked = sorted((-normal[t][0], normal[t][1], t[:k], t[k:]) for t in normal
                    for k in range(1, len(t)) if t[:k] in normal and t[k:] in normal)
    tok = Tokenizer(models.BPE({p: i for i, (p, _) in enumerate(vocab)},
                               [(a, b) for _, _, a, b in ranked],
                               unk_token=proto.trainer_spec.unk_piece, fuse_unk=True,
                               byte_fallback=byte_fallback))
  else:
    raise ConversionError(f"SentencePiece model {model_path} is a {kind.lower()} model; "
                          "only unigram and bpe models export to a tokenizer.json")
  spec = proto.normalizer_spec
  steps = []
  if spec.precompiled_charsmap:
    steps.append(normalizers.Precompiled(spec.precompiled_charsmap))
  if spec.remove_extra_whitespaces:
    steps += [normalizers.Replace(Regex(r"\A +| +\z"), ""),
              normalizers.Replace(Regex(" {2,}"), " ")]
  if spec.escape_whitespaces:
    steps.append(normalizers.Replace(" ", "\u2581"))
  if spec.add_dummy_prefix:  # Metaspace skips the prefix before a leading '▁'; SP doesn't
    steps.append(normalizers.Replace(Regex("\\A\u2581"), "\u2581\u2581"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581",
                                                 prepend_scheme="always", split=False)
  tok.normalizer = normalizers.Sequence(steps)
  tok.decoder = decoders.Sequence(
      [decoders.Replace("\u2581", " ")] + ([decoders.ByteFallback()] if byte_fallback
                                           else []) + [decoders.Fuse()]
      + ([decoders.Strip(content=" ", left=1)] if spec.add_dummy_prefix else []))
  return tok


def check_same_ids(tok, encode, texts, source: str) -> None:
  """Raises ConversionError at the first text where `tok` and `encode` disagree."""
  for text in texts:
    want = list(encode(text))
    got = tok.encode(text, add_special_tokens=False).ids
    if got != want:
      raise ConversionError(
          f"the tokenizer.json built from {source} gives other ids than it on "
          f"{text!r} ({got[:12]} vs {want[:12]}); the export is refused rather than "
          "write a tokenizer that silently differs")


def sentencepiece_files(directory: str, model_path: str, model_max_length: int
                        ) -> list[str]:
  """tokenizer.json + tokenizer_config.json + special_tokens_map.json for an spm.model."""
  from tokenizers import AddedToken
  from bert_jax.data import tokenizers as spm_lib
  ours = spm_lib.SentencePieceTokenizer.load(model_path)
  tok = sentencepiece_tokenizer(model_path)
  check_same_ids(tok, ours.encode, CHECK_TEXTS, model_path)
  tok.add_special_tokens([AddedToken(t, special=True) for t in SPECIAL_TOKENS])
  _template(tok, {t: i for i, t in enumerate(SPECIAL_TOKENS)})
  _save(tok, directory)
  _write_json(storage.join(directory, "tokenizer_config.json"), {
      "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": model_max_length,
      "clean_up_tokenization_spaces": False, **_special_tokens_config()})
  _write_json(storage.join(directory, "special_tokens_map.json"), _special_tokens_config())
  return ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]


def write(directory: str, tokenizer_files: list[str], model_max_length: int,
          lowercase: bool | None = None) -> list[str]:
  """The HF tokenizer files for the copied source files, unless it brought its own
  (an HF source) or has none (weights only: the summary's file list shows it).
  `lowercase`: a WordPiece model's casing when the source says it (a fine-tuned
  workdir's task.json), else read or inferred beside the vocab."""
  names = {os.path.basename(p): p for p in tokenizer_files}
  if "tokenizer.json" in names or "tokenizer_config.json" in names:
    return []   # an HF source: its own tokenizer files are already copied
  vocab = [p for p in tokenizer_files if p.endswith(".txt")]
  spm = [p for p in tokenizer_files if p.endswith(".model")]
  for path, files in ((vocab[:1], wordpiece_files), (spm[:1], sentencepiece_files)):
    if path:
      try:
        if files is wordpiece_files:
          return files(directory, path[0], model_max_length, lowercase)
        return files(directory, path[0], model_max_length)
      except (OSError, RuntimeError, ValueError) as e:
        if isinstance(e, ConversionError):
          raise
        raise ConversionError(f"cannot read the tokenizer {path[0]}: {e}") from None
  return []   # a source without a tokenizer (weights only): nothing to carry over
