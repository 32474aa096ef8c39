"""The table of parameter rules (bert_jax/models/params.py) and its consumers: weight
decay, layer-wise LR decay, the scanned layout, and pretrained weights into task models
from scanned and per-layer pretraining workdirs."""
import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from bert_jax import parallel
from bert_jax.config import ModelConfig
from bert_jax.models import BertForPreTraining, BertForSequenceClassification
from bert_jax.models import bert, params as params_lib
from bert_jax.train import checkpoint, finetune_source, optim, state as state_lib
from configs import common

LAYERS = 3


# Every switch away from BERT at once (bert_jax/config.py).
ABLATED = dict(norm_placement="pre", norm_type="rmsnorm", position_embedding="rotary",
               hidden_act="swiglu", use_bias=False, tie_word_embeddings=False,
               embedding_size=8, share_layers="attention", init_scheme="depth_scaled")


def model_config(scan: bool, **switches):
  c = common.model_config("tiny", vocab_size=64)
  c.hidden_size, c.num_heads, c.intermediate_size, c.num_layers = 16, 2, 32, LAYERS
  c.max_position_embeddings = 16
  c.scan_layers = scan
  c.update(switches)
  return ModelConfig.from_config(c)


def one_device_mesh():
  mesh_cfg = common.mesh_config()
  return parallel.create_mesh(mesh_cfg, jax.devices()[:1]), parallel.logical_axis_rules(
      mesh_cfg)


DUMMY = (np.zeros((1, 8), np.int32),) * 3


def sharded_state(model, seed, tx=optax.sgd(0.1)):
  mesh, rules = one_device_mesh()
  state, _ = state_lib.create_sharded_state(model, tx, DUMMY, jax.random.PRNGKey(seed),
                                            mesh, rules)
  return state


def abstract_params(model):
  """The params of `model` as ShapeDtypeStructs on the one device (nothing compiled)."""
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  shapes = jax.eval_shape(lambda: nn.meta.unbox(model.init(
      jax.random.PRNGKey(0), np.zeros((1, 8), np.int32))["params"]))
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)


@pytest.fixture(scope="module")
def task_states():
  """{scan_layers: a sequence-classification TrainState}."""
  return {scan: sharded_state(BertForSequenceClassification(model_config(scan), 3), 9)
          for scan in (False, True)}


@pytest.fixture(scope="module")
def workdirs(tmp_path_factory):
  """{scan_layers: (workdir, per-layer params)} of two pretraining checkpoints."""
  out = {}
  for scan in (False, True):
    workdir = tmp_path_factory.mktemp(f"pretrain_scan_{scan}")
    state = sharded_state(BertForPreTraining(model_config(scan)), seed=int(scan))
    ck = checkpoint.Checkpointer(str(workdir / "checkpoints"))
    ck.save(5, state, {"position": 0})
    ck.close()
    out[scan] = (str(workdir), params_lib.to_per_layer(jax.device_get(state.params)))
  return out


@pytest.mark.parametrize("source_scan", [False, True], ids=["from_per_layer", "from_scanned"])
@pytest.mark.parametrize("task_scan", [False, True], ids=["into_per_layer", "into_scanned"])
def test_finetune_starts_from_every_pretrained_encoder_leaf(workdirs, task_states,
                                                            source_scan, task_scan):
  workdir, source = workdirs[source_scan]
  task = task_states[task_scan]
  assert params_lib.is_scanned(task.params) == task_scan
  merged = finetune_source.merge_params(task.params,
                                        finetune_source.load_bert_jax_workdir(workdir))
  assert params_lib.is_scanned(merged) == task_scan
  got = dict(params_lib.flatten(params_lib.to_per_layer(jax.device_get(merged))))
  want = dict(params_lib.flatten(source))
  encoder = [p for p in want if p.startswith("bert/")]
  assert len(encoder) == 5 + 16 * LAYERS + 2   # embeddings, layers, pooler
  for path in encoder:
    np.testing.assert_array_equal(got[path], want[path], err_msg=path)
  # The classifier is the task model's own init.
  np.testing.assert_array_equal(merged["classifier"]["kernel"],
                                task.params["classifier"]["kernel"])

  scales = params_lib.lr_depth_scales(merged, LAYERS, 0.5)
  kernel = "attention/query/kernel"
  if task_scan:
    per_layer = np.asarray(scales["bert"]["encoder"]["layers"]["attention"]["query"]
                           ["kernel"]).ravel()
  else:
    per_layer = [float(scales["bert"]["encoder"][f"layer_{i}"]["attention"]["query"]
                       ["kernel"]) for i in range(LAYERS)]
  # decay ** (L + 1 - depth), depth = i + 1 for layer i
  np.testing.assert_allclose(per_layer, [0.5 ** (LAYERS - i) for i in range(LAYERS)],
                             err_msg=kernel)
  assert float(scales["bert"]["embeddings"]["word_embeddings"]["embedding"]) == 0.5 ** 4
  assert float(scales["classifier"]["kernel"]) == 1.0


@pytest.mark.parametrize("source_scan", [False, True], ids=["from_per_layer", "from_scanned"])
def test_restore_params_converts_the_layout_to_the_target(workdirs, source_scan):
  workdir, source = workdirs[source_scan]
  target = abstract_params(BertForPreTraining(model_config(not source_scan)))
  restored = checkpoint.restore_params(f"{workdir}/checkpoints", target=target)
  assert params_lib.is_scanned(restored) == (not source_scan)
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         params_lib.to_per_layer(jax.device_get(restored)), source)


def test_mismatched_checkpoint_names_every_leaf(workdirs):
  workdir, _ = workdirs[False]
  c = model_config(False).replace(intermediate_size=48)
  task = abstract_params(BertForSequenceClassification(c, 2))
  with pytest.raises(ValueError, match=r"bert/encoder/layer_0/intermediate/kernel: "
                                       r"init.checkpoint shape \(16, 32\), model \(16, 48\)"):
    finetune_source.merge_params(task, finetune_source.load_bert_jax_workdir(workdir))


def test_weight_decay_mask_skips_biases_and_norms_in_both_layouts():
  for scan in (False, True):
    shapes = abstract_params(BertForPreTraining(model_config(scan)))
    mask = dict(params_lib.flatten(optim.decay_mask(shapes)))
    for path, decays in mask.items():
      leaf = path.rsplit("/", 1)[-1]
      assert decays == (leaf in ("kernel", "embedding")), path


def norm_module_paths(model) -> set[str]:
  """'/'-joined paths of every nn.LayerNorm / nn.RMSNorm that `model.init` calls.

  Norms of the shared sublayers (`model.share_layers`) run in a block of their own
  (`models/bert.py: SharedSublayers`, parent None) whose parameters the encoder
  holds as `encoder/shared`.
  """
  found = set()

  def record(next_fun, args, kwargs, context):
    module = context.module
    if isinstance(module, (nn.LayerNorm, nn.RMSNorm)) and context.method_name == "__call__":
      root = module
      while isinstance(root.parent, nn.Module):
        root = root.parent
      prefix = ("bert", "encoder", "shared") if isinstance(root, bert.SharedSublayers) else ()
      found.add("/".join(prefix + tuple(module.path)))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), np.zeros((1, 8), np.int32)))
  return found


PER_LAYER_NORMS = {"bert/embeddings/layer_norm", "mlm/transform_layer_norm",
                   *(f"bert/encoder/layer_{i}/{n}_layer_norm" for i in range(LAYERS)
                     for n in ("attention", "output"))}
# ABLATED shares the attention sublayer (encoder/shared), is pre-LN (a final norm).
ABLATED_SCANNED_NORMS = {
    "bert/embeddings/layer_norm", "mlm/transform_layer_norm",
    "bert/encoder/layers/output_layer_norm", "bert/encoder/final_layer_norm",
    "bert/encoder/shared/attention_layer_norm", "bert/encoder/shared/attention/query_norm",
    "bert/encoder/shared/attention/key_norm"}


@pytest.mark.parametrize("switches,want", [
    (dict(scan=False), PER_LAYER_NORMS),
    (dict(scan=True, **ABLATED, qk_norm=True), ABLATED_SCANNED_NORMS)])
def test_weight_decay_mask_is_false_exactly_on_norm_modules_and_biases(switches, want):
  """The mask is by module: every parameter of each norm the model calls, and biases,
  are not decayed; everything else is (scanned: paths under encoder/layers)."""
  model = BertForPreTraining(model_config(**switches))
  norms = norm_module_paths(model)
  assert norms == want
  mask = dict(params_lib.flatten(optim.decay_mask(abstract_params(model))))
  norm_params = {p for p in mask if p.rsplit("/", 1)[0] in norms}
  assert {p.rsplit("/", 1)[0] for p in norm_params} == norms  # every norm has params
  for path, decays in mask.items():
    leaf = path.rsplit("/", 1)[-1]
    assert decays == (path not in norm_params and leaf not in ("bias", "output_bias")), path
  # By module, not by leaf name: a 'scale' outside a norm decays, a norm's 'offset' not.
  made_up = {"attention": {"scale": 1.0}, "final_rmsnorm": {"offset": 1.0}}
  assert optim.decay_mask(made_up) == {"attention": {"scale": True},
                                       "final_rmsnorm": {"offset": False}}


def test_ablated_checkpoint_restores_in_the_other_layout_and_fine_tunes(tmp_path):
  """Every switch on, scanned, with Adam moments: resumes per-layer and fine-tunes."""
  tx = optax.adam(1e-3)
  scanned = BertForPreTraining(model_config(True, **ABLATED))
  state = sharded_state(scanned, seed=2, tx=tx)
  state = state.replace(opt_state=jax.tree_util.tree_map(lambda x: x + 1, state.opt_state))
  ck = checkpoint.Checkpointer(str(tmp_path / "checkpoints"))
  ck.save(3, state, {"position": 0})
  ck.wait()

  per_layer = BertForPreTraining(model_config(False, **ABLATED))
  mesh, rules = one_device_mesh()
  shardings = state_lib.state_shardings(per_layer, tx, DUMMY, jax.random.PRNGKey(0), mesh,
                                        rules)
  target = state_lib.abstract_state(shardings, per_layer, tx, DUMMY, jax.random.PRNGKey(0))
  restored, _ = ck.restore(3, target)
  ck.close()
  want = params_lib.to_per_layer(jax.device_get(state.params))
  assert "shared" in want["bert"]["encoder"] and "decoder" in want["mlm"]
  jax.tree_util.tree_map(np.testing.assert_array_equal, jax.device_get(restored.params),
                         want)
  jax.tree_util.tree_map(np.testing.assert_array_equal,
                         jax.device_get(restored.opt_state[0].mu),
                         params_lib.to_per_layer(jax.device_get(state.opt_state[0].mu)))

  for scan in (False, True):
    task = abstract_params(BertForSequenceClassification(model_config(scan, **ABLATED), 2))
    merged = finetune_source.merge_params(
        task, finetune_source.load_bert_jax_workdir(str(tmp_path)))
    got = dict(params_lib.flatten(params_lib.to_per_layer(jax.device_get(merged))))
    for path, value in params_lib.flatten(want["bert"], "bert"):
      np.testing.assert_array_equal(got[path], value, err_msg=path)
