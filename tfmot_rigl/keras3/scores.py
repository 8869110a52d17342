"""What each algorithm computes inside the train step, in `keras.ops` (the algorithms' TF methods, backend-neutral).

The algorithm objects of tfmot_rigl.algorithms stay the single description of every method (knobs, validation,
windows, serialisation, per-step state); this module gives their in-step computations — drop and grow scores, values
and slots of new connections, SNIP's and magnitude pruning's one-shot selections — on any Keras 3 backend.
"""
import re

from keras import ops

from tfmot_rigl.core import distributions
from tfmot_rigl.keras3 import mask_ops

_GROW_INIT = re.compile(r"^(zeros|random_normal|random_uniform|initial_dist|grad_scale|grad_sign)(?:_(\d+(?:\.\d+)?))?$")


def drop_scores(algorithm, weight, mask, grad, state, seed):
  del algorithm, grad, state, seed
  return ops.abs(weight * mask)


def grow_scores(algorithm, weight, mask, grad, state, seed):
  if algorithm.name == "rigl":
    return ops.abs(grad)
  if algorithm.name == "snfs":
    return ops.abs(state["grad_ema"])
  if algorithm.name == "set":
    return mask_ops.uniform(tuple(mask.shape), ops.add(seed, 3), dtype=weight.dtype)
  raise ValueError(f"{algorithm.name} has no grow scores")


def in_blocks(algorithm, shape) -> bool:
  return algorithm.in_blocks(tuple(shape))


def update_mask(algorithm, weight, mask, grad, state, seed, drop_fraction):
  """(new float mask, bool new connections), on the block grid for kernels masked in blocks."""
  drop = drop_scores(algorithm, weight, mask, grad, state, seed)
  grow = grow_scores(algorithm, weight, mask, grad, state, seed)
  if not in_blocks(algorithm, mask.shape):
    return mask_ops.drop_and_grow(mask, drop, grow, drop_fraction, seed)
  block_shape, shape = algorithm.block_shape, tuple(mask.shape)
  new_mask, new_connections = mask_ops.drop_and_grow(
      mask_ops.block_mask(mask, block_shape), mask_ops.reduce_blocks(drop, block_shape, algorithm.block_norm),
      mask_ops.reduce_blocks(grow, block_shape), drop_fraction, seed)
  return (mask_ops.expand(new_mask, block_shape, shape),
          ops.cast(mask_ops.expand(ops.cast(new_connections, "int32"), block_shape, shape), "bool"))


def keep_largest(algorithm, scores, count, seed, candidates=None):
  """A one-shot float mask keeping the `count` largest `scores` (entries, or blocks in blocks) among `candidates`."""
  shape = tuple(scores.shape)
  if in_blocks(algorithm, shape):
    block_shape = algorithm.block_shape
    grid_candidates = None if candidates is None else mask_ops.block_mask(candidates, block_shape) > 0.5
    kept = mask_ops.top_k_mask(mask_ops.reduce_blocks(scores, block_shape), count, seed, grid_candidates)
    return mask_ops.expand(kept, block_shape, shape)
  return mask_ops.top_k_mask(scores, count, seed, None if candidates is None else candidates > 0.5)


def grid_size(algorithm, shape) -> int:
  if in_blocks(algorithm, shape):
    n_in, n_out = shape[-2] // algorithm.block_shape[0], shape[-1] // algorithm.block_shape[1]
    return int(n_in * n_out)
  size = 1
  for d in shape:
    size *= int(d)
  return size


def snip_mask(algorithm, weight, grad, sparsity, seed):
  """SNIP's one shot: keep the top (1 − s)·N connections (blocks) by |g ⊙ w|."""
  shape = tuple(weight.shape)
  keep = distributions.nonzeros(grid_size(algorithm, shape), sparsity)
  return keep_largest(algorithm, ops.abs(grad * weight), keep, seed)


def magnitude_sparsity(step, final_sparsity, begin, end, power):
  """TFMOT's PolynomialDecay from 0: s_f · (1 − (1 − p)^power), p the clipped progress through [begin, end]."""
  progress = ops.clip((ops.cast(step, "float32") - begin) / max(end - begin, 1), 0.0, 1.0)
  return final_sparsity * (1.0 - ops.power(1.0 - progress, float(power)))


def magnitude_mask(algorithm, weight, mask, sparsity, seed):
  """Keep the round(N·(1 − s)) (at least 1) largest |w| among the active entries (blocks), as TFMOT's count."""
  size = grid_size(algorithm, tuple(weight.shape))
  keep = ops.maximum(ops.cast(ops.round(size * (1.0 - sparsity)), "int32"), 1)
  scores = ops.abs(weight)
  active = ops.cast(mask, "float32")
  if in_blocks(algorithm, tuple(weight.shape)):
    keep = ops.minimum(keep, ops.sum(ops.cast(mask_ops.block_mask(active, algorithm.block_shape) > 0.5, "int32")))
  else:
    keep = ops.minimum(keep, ops.sum(ops.cast(active > 0.5, "int32")))
  return keep_largest(algorithm, scores, keep, seed, candidates=active)


def grow_values(algorithm, weight, mask, grad, seed, initial_weight=None):
  """Values given to new connections (`grow_init`), optionally divided by the number after its name."""
  match = _GROW_INIT.match(algorithm.grow_init)
  kind, divisor = match.group(1), float(match.group(2) or 1.0)
  seed = ops.add(seed, 7)
  shape = tuple(weight.shape)
  if kind == "zeros":
    return ops.zeros_like(weight)
  if kind == "grad_scale":
    return grad / divisor
  if kind == "grad_sign":
    return ops.sign(grad) / divisor
  active = mask > 0.5
  count = ops.maximum(ops.sum(ops.cast(active, weight.dtype)), 1.0)
  if kind == "random_normal":
    mean = ops.sum(ops.where(active, weight, 0.0)) / count
    std = ops.sqrt(ops.sum(ops.where(active, ops.square(weight - mean), 0.0)) / count)
    return mask_ops.normal(shape, seed, dtype=weight.dtype) * std / divisor
  if kind == "random_uniform":
    bound = ops.sum(ops.where(active, ops.abs(weight), 0.0)) / count
    return mask_ops.uniform(shape, seed, dtype=weight.dtype) * (2.0 * bound) - bound
  flat = ops.reshape(initial_weight, (-1,))  # initial_dist: a seeded shuffle of the weights at initialisation
  order = ops.argsort(mask_ops.tie_draws(int(flat.shape[0]), seed))
  return ops.reshape(ops.take(flat, order), shape) / divisor


def new_slot_values(algorithm, grad, slot):
  """Optimizer slots of new connections start at zero (initial_acc_scale is refused by prune_sparse)."""
  del algorithm, grad
  return ops.zeros_like(slot)
