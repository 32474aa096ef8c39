"""Checkpoints in and out: Hugging Face, Google's original TF BERT, bert_jax.

    from bert_jax import convert
    loaded = convert.load("uncased_L-12_H-768_A-12")      # format detected
    loaded.params, loaded.model_config                     # BertForPreTraining(cfg)
    convert.convert("workdir/tiny", "exported_hf")         # bert_jax -> HF dir

CLI: `python -m bert_jax.convert --src=... --dst=... [--from=...] [--to=...]`.
Modules: hf.py (HF names, config.json, dirs), hf_tasks.py (HF task models: class,
task, head), tf.py (original TF names), native.py
(bert_jax workdirs and params dirs, orbax), formats.py (detection, load, atomic save),
common.py (shapes, head completion, the error type).
"""
from bert_jax.convert.common import ConversionError
from bert_jax.convert.formats import FORMATS, Loaded, convert, detect, load, save
from bert_jax.convert.hf import hf_state_dict, params_from_hf

__all__ = ["ConversionError", "FORMATS", "Loaded", "convert", "detect", "load", "save",
           "hf_state_dict", "params_from_hf"]
