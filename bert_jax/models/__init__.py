"""Flax modules only: they know nothing of data or training."""
from bert_jax.models.bert import BertModel
from bert_jax.models.heads import (BertForPreTraining, BertForQuestionAnswering,
                                   BertForSequenceClassification,
                                   BertForTokenClassification)

__all__ = ["BertModel", "BertForPreTraining", "BertForSequenceClassification",
           "BertForQuestionAnswering", "BertForTokenClassification"]
