"""ModelConfig: built once from the ml_collections config, validated, saved and read back."""
import jax
import numpy as np
import pytest

from bert_jax.config import ModelConfig
from configs import common
from configs import pretrain as pretrain_config


def test_a_config_model_section_round_trips():
  m = common.model_config("mini", vocab_size=1000)
  cfg = ModelConfig.from_config(m)
  assert (cfg.num_layers, cfg.hidden_size, cfg.num_heads, cfg.intermediate_size,
          cfg.vocab_size) == (4, 256, 4, 1024, 1000)
  assert ModelConfig.from_dict(cfg.to_dict()) == cfg
  with pytest.raises(Exception):
    cfg.hidden_size = 1                        # frozen


@pytest.mark.parametrize("field,value,message", [
    ("hidden_act", "swish", r"model.hidden_act='swish': expected one of"),
    ("num_heads", 5, r"model.num_heads=5: expected a divisor of model.hidden_size=768"),
    ("attention_impl", "flash", r"model.attention_impl='flash'"),
    ("dtype", "float64", r"model.dtype='float64'"),
    ("hidden_dropout_prob", 1.0, r"model.hidden_dropout_prob=1.0: expected a probability"),
    ("num_layers", "12", r"model.num_layers='12': expected a int"),
    ("scan_layers", 1, r"model.scan_layers=1: expected a bool"),
])
def test_a_wrong_value_names_its_field(field, value, message):
  with pytest.raises(ValueError, match=message):
    ModelConfig().replace(**{field: value})


def test_an_unknown_field_names_itself():
  with pytest.raises(ValueError, match=r"model.hiden_size in saved.json is not a model field"):
    ModelConfig.from_dict({"hiden_size": 64}, "saved.json")
  # A missing field takes its default (BERT's behaviour): older checkpoints still load.
  assert ModelConfig.from_dict({"hidden_size": 64, "num_heads": 2}).num_layers == 12


def test_ints_are_accepted_for_floats():
  assert ModelConfig(layer_norm_eps=1).layer_norm_eps == 1.0


def test_checkpoint_carries_the_model_config(tmp_path):
  """A workdir alone says what model it holds: read back from the checkpoint item."""
  import optax
  from bert_jax import parallel
  from bert_jax.models import BertForPreTraining
  from bert_jax.train import checkpoint, pretrain, state as state_lib
  c = pretrain_config.get_config("tiny,vocab=64,seq=16")
  c.model.hidden_size, c.model.intermediate_size, c.model.hidden_act = 16, 24, "relu"
  model_cfg = ModelConfig.from_config(c.model)
  mesh = parallel.create_mesh(c.mesh)
  dummy = np.zeros((1, 16), np.int32)
  st, _ = state_lib.create_sharded_state(BertForPreTraining(model_cfg), optax.sgd(0.1),
                                         (dummy, dummy, dummy), jax.random.PRNGKey(0),
                                         mesh, parallel.logical_axis_rules(c.mesh))
  ck = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  ck.save(3, st, {"position": 0}, c.to_json_best_effort())
  ck.close()
  assert checkpoint.read_model_config(str(tmp_path / "checkpoints")) == model_cfg
  with pytest.raises(FileNotFoundError, match="no checkpoint directory"):
    checkpoint.read_model_config(str(tmp_path / "nothing"))
  del pretrain


def test_configs_read_no_files_and_the_job_takes_the_source_models_shape(monkeypatch):
  """Building a config opens no file (configs/ does no I/O); an `init=hf:DIR` run takes
  its model shape from DIR/config.json when the job starts (`with_source_model`), here
  the MiniLM package's: 6 layers, hidden 384, 12 heads, as transformers reads it."""
  import builtins
  import io

  import transformers

  from bert_jax.train import finetune_source
  from configs import finetune_common, finetune_glue, finetune_ner, finetune_squad

  def refuse(file, *args, **kwargs):
    raise AssertionError(f"a config opened {file!r}")

  with monkeypatch.context() as m:
    m.setattr(builtins, "open", refuse)
    m.setattr(io, "open", refuse)
    built = [finetune_glue.get_config("task=mrpc"), finetune_ner.get_config(""),
             finetune_squad.get_config("task=squad_v2.0"),
             pretrain_config.get_config("tiny")]
  glue = built[0]
  assert glue.init.checkpoint == "hf:" + finetune_common.minilm_dir()
  assert glue.model.hidden_size == 768                   # `size=base` until the job starts
  resolved = finetune_source.with_source_model(glue)
  hf = transformers.BertConfig.from_pretrained(finetune_common.minilm_dir())
  assert (resolved.model.num_layers, resolved.model.hidden_size, resolved.model.num_heads,
          resolved.model.intermediate_size, resolved.model.vocab_size) == (
              hf.num_hidden_layers, hf.hidden_size, hf.num_attention_heads,
              hf.intermediate_size, hf.vocab_size)
  assert glue.model.hidden_size == 768                   # a copy: the config is unchanged
  ModelConfig.from_config(resolved.model)                # still a valid model config
