"""bert_jax: BERT-family encoders, pretraining and fine-tuning in JAX/Flax."""
