"""Flax modules only: they know nothing of data or training."""
from bert_jax.models.bert import BertModel
from bert_jax.models.heads import (BertForPreTraining, BertForQuestionAnswering,
                                   BertForSequenceClassification,
                                   BertForTokenClassification, make_task_model)

__all__ = ["BertModel", "BertForPreTraining", "BertForSequenceClassification",
           "BertForQuestionAnswering", "BertForTokenClassification", "make_task_model"]
