"""Experiment configs: one `get_config(arg)` per job family. They import no bert_jax code."""
