"""The pretraining job's pure steps: (state, global batch, rng) -> (state, metrics).

`train_step` differentiates the MLM (+ NSP/SOP) loss, accumulating over
`grad_accum_steps` microbatches (`grad_accum.accumulate`), and applies the optimizer;
`eval_step` returns metric sums. `bert_jax/train/setup.py` jits them for a mesh.
A packed batch (`data.packing`) carries `position_ids`, which both pass to the model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from bert_jax.train import grad_accum, losses


def _apply(apply_fn, params, batch, **kwargs):
  """The model on `batch`, with its `position_ids` when it has them (packed rows)."""
  return apply_fn({"params": params}, batch["input_ids"], batch["token_type_ids"],
                  batch["attention_mask"], masked_lm_positions=batch["masked_lm_positions"],
                  position_ids=batch.get("position_ids"), **kwargs)


def grads_and_sums(apply_fn, params, batch, rng, grad_accum_steps: int = 1,
                   use_nsp: bool = True):
  """Gradient of the pretraining loss and the metric sums over the global batch.

  Each microbatch loss is normalised by the full batch's MLM weight and row count, so
  the accumulated sum equals the full-batch gradient. `use_nsp=False`
  (data.objective='none', RoBERTa-style packing) drops the NSP term from the loss;
  its metrics are still computed.
  """
  nsp_scale = 1.0 if use_nsp else 0.0
  mlm_weight = jnp.sum(batch["masked_lm_weights"].astype(jnp.float32)) + 1e-5
  nsp_count = batch["next_sentence_label"].shape[0]

  def one(params, mb, rng):
    def loss_fn(params):
      out = _apply(apply_fn, params, mb, deterministic=False, rngs={"dropout": rng})
      sums = losses.pretraining_sums(out, mb)
      loss = sums["mlm_loss_sum"] / mlm_weight + nsp_scale * sums["nsp_loss_sum"] / nsp_count
      return loss, sums
    return jax.grad(loss_fn, has_aux=True)(params)

  return grad_accum.accumulate(one, params, batch, rng, grad_accum_steps)


def train_step(state, batch, rng, *, schedule, grad_accum_steps: int = 1,
               use_nsp: bool = True):
  """One optimizer step. Pure: (state, global batch, rng) -> (state, metrics)."""
  dropout_rng = jax.random.fold_in(rng, state.step)
  grads, sums = grads_and_sums(state.apply_fn, state.params, batch, dropout_rng,
                               grad_accum_steps, use_nsp)
  metrics = losses.metrics_from_sums(sums)
  if not use_nsp:
    metrics["loss"] = metrics["mlm_loss"]
  metrics["grad_norm"] = optax.global_norm(grads)
  metrics["learning_rate"] = schedule(state.step)
  return state.apply_gradients(grads=grads), metrics


def eval_step(state, batch, *, baseline_token: int):
  """Metric sums on one batch, plus the hits of always predicting `baseline_token`."""
  out = _apply(state.apply_fn, state.params, batch, deterministic=True)
  sums = losses.pretraining_sums(out, batch)
  sums["baseline_correct"] = jnp.sum(
      (batch["masked_lm_ids"] == baseline_token) * batch["masked_lm_weights"])
  return sums


PRNG_IMPLS = ("auto", "threefry2x32", "rbg", "unsafe_rbg")


def resolve_prng_impl(impl: str, platform: str) -> str:
  """`auto` is `rbg` on TPU and threefry elsewhere.

  On TPU, threefry's bits are hashed on the vector units inside the fusions that apply
  dropout, and XLA's TPU backend compiles those fusions slowly (measured with libtpu
  0.0.42.1: BERT-base's step for a v4-32 compiles in 55 s with threefry, 17 s with
  `rbg`, and with parallel.LIBTPU_FLAGS its length-512 phase needs 13.4 instead of
  18.4 GiB per chip; docs/benchmarks.md); `rbg` draws them with the chip's
  RngBitGenerator, as t5x's hardware-RNG option and MaxText do. Its bits are
  deterministic for a fixed mesh (a resume is bitwise), not across meshes. On CPU and
  GPU threefry stays, so those runs are bitwise what they were (`rbg` is no faster on
  CPU, docs/benchmarks.md)."""
  if impl not in PRNG_IMPLS:
    raise ValueError(f"config field train.dropout_prng_impl={impl!r}: expected one of "
                     f"{PRNG_IMPLS}")
  if impl == "auto":
    return "rbg" if platform == "tpu" else "threefry2x32"
  return impl


def dropout_key(seed: int, impl: str, platform: str = "cpu") -> jax.Array:
  """The dropout key for `train.dropout_prng_impl` on `platform` (`resolve_prng_impl`):
  threefry is the key of the seed's split, as before; `rbg` / `unsafe_rbg` keys draw
  their bits with XLA's RngBitGenerator."""
  impl = resolve_prng_impl(impl, platform)
  if impl == "threefry2x32":
    return jax.random.split(jax.random.PRNGKey(seed))[1]
  return jax.random.key(seed, impl=impl)
