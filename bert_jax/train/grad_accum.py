"""Gradient accumulation over microbatches, shared by every job's train step.

`accumulate(grad_fn, params, batch, rng, k)` cuts the global batch into k microbatches
(rows j, j+k, ... form microbatch j, so each one stays spread over every data-parallel
device), calls `grad_fn(params, microbatch, rng_j)` on each inside a `lax.scan` and sums
what it returns (gradients and any metric sums). A job makes the sum equal the full
batch's gradient by normalising each microbatch's loss with the *full* batch's
denominator (MLM weight, rows, label weights), computed before the call.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def accumulate(grad_fn: Callable[[Any, dict, jax.Array], Any], params, batch: dict,
               rng: jax.Array, num_microbatches: int = 1) -> Any:
  """Sum of `grad_fn` over `num_microbatches` microbatches of `batch`.

  With one microbatch this is `grad_fn(params, batch, rng)` itself (the same program
  and the same dropout bits as without accumulation); otherwise microbatch j draws
  dropout from `fold_in(rng, j)`.
  """
  k = num_microbatches
  if k == 1:
    return grad_fn(params, batch, rng)
  micro = jax.tree_util.tree_map(
      lambda x: x.reshape(x.shape[0] // k, k, *x.shape[1:]).swapaxes(0, 1), batch)

  def body(acc, xs):
    j, mb = xs
    mb = {n: nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 1))
          for n, x in mb.items()}
    out = grad_fn(params, mb, jax.random.fold_in(rng, j))
    return jax.tree_util.tree_map(jnp.add, acc, out), None

  first = jax.tree_util.tree_map(lambda x: x[0], micro)
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype),
                                 jax.eval_shape(grad_fn, params, first, rng))
  total, _ = jax.lax.scan(body, zeros, (jnp.arange(k), micro))
  return total
