"""Using a trained model: text in; vectors, tokens, labels, entities, answers out.

    from bert_jax import inference
    tok, model = inference.load("workdir/sst2")      # or Tokenizer/Model.from_pretrained
    outputs = model(**tok(["a sentence", "another one"]))
    outputs["sequence_output"], outputs["pooled_output"], outputs["logits"]

    inference.embed(model, tok, texts)                # [n, hidden]
    inference.fill_mask(model, tok, ["The [MASK] sat on the mat."])
    inference.classify(model, tok, texts, text_pairs=None)
    inference.tag(model, tok, ["Angela Merkel visited Paris."])
    inference.answer(model, tok, questions, contexts)

`path`: a bert_jax fine-tuning or pretraining workdir, an HF directory (a
sentence-transformers one included), a Google checkpoint directory or a converted-params
dir (`source.py`). Pipelines window long inputs (`pipelines.py`). Command line:
`python -m bert_jax.predict`.
"""

from bert_jax.inference.model import Model
from bert_jax.inference.pipelines import answer, classify, embed, fill_mask, tag
from bert_jax.inference.source import ModelError
from bert_jax.inference.tokenizer import Tokenizer

PIPELINES = {"embed": embed, "fill_mask": fill_mask, "classify": classify, "tag": tag,
             "answer": answer}


def load(path: str, step: int | None = None) -> tuple[Tokenizer, Model]:
  """(tokenizer, model) of a model directory of any kind."""
  return Tokenizer.from_pretrained(path), Model.from_pretrained(path, step)


__all__ = ["Model", "ModelError", "Tokenizer", "PIPELINES", "load", "embed", "fill_mask",
           "classify", "tag", "answer"]
