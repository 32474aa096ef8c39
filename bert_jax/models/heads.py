"""Heads on top of `BertModel`: pretraining (masked LM with tied decoder, NSP) and the
fine-tuning task heads.

`BertForPreTraining(cfg)` (cfg: a `bert_jax.config.ModelConfig`) is the public entry point (API kept stable):

    out = model.apply({'params': p}, input_ids, token_type_ids, attention_mask,
                      deterministic=True)
    out['mlm_logits']       [batch, length, vocab]  (or [batch, predictions, vocab]
                                                     when masked_lm_positions is given)
    out['nsp_logits']       [batch, 2]
    out['sequence_output']  [batch, length, hidden]
    out['pooled_output']    [batch, hidden]

Task heads (dropout at `hidden_dropout_prob`, then one dense layer, as BERT's paper):

    BertForSequenceClassification(cfg, num_labels)  pooled -> 'logits' [batch, labels]
        (classification: softmax; multi-label: sigmoid per label; regression: 1 label)
    BertForQuestionAnswering(cfg)     sequence -> 'start_logits', 'end_logits' [batch, length]
    BertForTokenClassification(cfg, num_labels)  sequence -> 'logits' [batch, length, labels]

Their parameter trees are {'bert': ..., 'classifier': {'kernel', 'bias'}}, so an
imported or pretrained encoder drops into 'bert'.

Scoring only the masked positions (gathered by `masked_lm_positions`, as the original
BERT `get_masked_lm_output` does) saves the [length, vocab] projection for the ~85% of
positions that carry no label.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.config import ModelConfig
from bert_jax.models.bert import (BertModel, _zeros, activation, dense, layer_norm,
                                  pin_to_embed)


def gather_positions(sequence: jax.Array, positions: jax.Array) -> jax.Array:
  """[batch, length, hidden] x [batch, predictions] -> [batch, predictions, hidden]."""
  return jnp.take_along_axis(sequence, positions[..., None].astype(jnp.int32), axis=1)


class MaskedLMHead(nn.Module):
  """dense -> activation -> norm -> decoder + bias.

  The decoder is the word-embedding table (`model.tie_word_embeddings`, as BERT) or
  its own [embedding_size, vocab] `decoder` kernel. The transform maps to the
  embedding width (ALBERT's factorised embeddings: `model.embedding_size`).
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, hidden, embeddings):
    cfg = self.cfg
    h = dense(cfg, cfg.embedding_dim, ("embed", "mlp"), "transform")(hidden)
    h = activation(cfg.hidden_act)(h)
    h = layer_norm(cfg, "transform_layer_norm")(h)
    if cfg.tie_word_embeddings:
      logits = embeddings.attend(h)  # [..., vocab]
    else:
      logits = dense(cfg, cfg.vocab_size, ("embed", "vocab"), "decoder",
                     use_bias=False)(pin_to_embed(h))
    bias = self.param("output_bias", _zeros(("vocab",)), (cfg.vocab_size,),
                      cfg.weights_dtype)
    return logits.astype(jnp.float32) + bias.astype(jnp.float32)


class BertForPreTraining(nn.Module):
  """BERT with the MLM and next-sentence-prediction heads."""
  cfg: ModelConfig

  def setup(self):
    self.bert = BertModel(self.cfg)
    self.mlm = MaskedLMHead(self.cfg)
    self.nsp = dense(self.cfg, 2, ("embed", "classes"), "nsp")

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               masked_lm_positions=None, deterministic: bool = True, position_ids=None):
    out = self.bert(input_ids, token_type_ids, attention_mask, deterministic, position_ids)
    hidden = out["sequence_output"]
    if masked_lm_positions is not None:
      hidden = gather_positions(hidden, masked_lm_positions)
    mlm_logits = self.mlm(hidden, self.bert.embeddings)
    nsp_logits = self.nsp(out["pooled_output"]).astype(jnp.float32)
    return {**out, "mlm_logits": mlm_logits, "nsp_logits": nsp_logits}


class _TaskHead(nn.Module):
  """BertModel, dropout, one dense 'classifier' over the pooled or sequence output."""
  cfg: ModelConfig
  num_labels: int
  on_sequence: bool = False
  head_dropout: bool = True

  def setup(self):
    if self.num_labels < 1:
      raise ValueError(f"a task head needs num_labels >= 1, got {self.num_labels}")
    self.bert = BertModel(self.cfg)
    self.dropout = nn.Dropout(self.cfg.hidden_dropout_prob)
    self.classifier = dense(self.cfg, self.num_labels, ("embed", "classes"), "classifier")

  def logits(self, input_ids, token_type_ids, attention_mask, deterministic):
    out = self.bert(input_ids, token_type_ids, attention_mask, deterministic)
    h = out["sequence_output"] if self.on_sequence else out["pooled_output"]
    if self.head_dropout:
      h = self.dropout(h, deterministic=deterministic)
    return out, self.classifier(h).astype(jnp.float32)


class BertForSequenceClassification(_TaskHead):
  """'logits' [batch, num_labels] from the pooled [CLS] output."""

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic: bool = True):
    out, logits = self.logits(input_ids, token_type_ids, attention_mask, deterministic)
    return {**out, "logits": logits}


class BertForTokenClassification(_TaskHead):
  """'logits' [batch, length, num_labels] from every position."""
  on_sequence: bool = True

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic: bool = True):
    out, logits = self.logits(input_ids, token_type_ids, attention_mask, deterministic)
    return {**out, "logits": logits}


class BertForQuestionAnswering(_TaskHead):
  """'start_logits', 'end_logits' [batch, length]; no dropout before the span layer
  (as run_squad.py)."""
  num_labels: int = 2
  on_sequence: bool = True
  head_dropout: bool = False

  def __call__(self, input_ids, token_type_ids=None, attention_mask=None,
               deterministic: bool = True):
    out, logits = self.logits(input_ids, token_type_ids, attention_mask, deterministic)
    return {**out, "start_logits": logits[..., 0], "end_logits": logits[..., 1]}


def make_task_model(kind: str, cfg: ModelConfig, num_labels: int) -> nn.Module:
  """The task model of a fine-tuning `kind`: 'span' (SQuAD), 'token' (tagging), or a
  sequence head ('classification', 'multilabel', 'regression')."""
  if kind == "span":
    return BertForQuestionAnswering(cfg)
  if kind == "token":
    return BertForTokenClassification(cfg, num_labels)
  return BertForSequenceClassification(cfg, num_labels)
