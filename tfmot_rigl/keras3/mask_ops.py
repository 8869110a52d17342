"""The mask math of tfmot_rigl.core.masks in `keras.ops`: one implementation for every Keras 3 backend.

The selection is the core's: the k-th largest score is found by bisection over the scores' int32 bit patterns (here
a 32-step radix descent, each step one compare and one sum, in a `fori_loop` of static shapes for `jax.jit` and XLA), and
ties at that value are broken by a second descent over seeded integer draws, then by index. The result is exactly the
selection a full sort by (score descending, draw ascending, index ascending) makes.

What differs from the TensorFlow core is only the source of the seeded draws: TF's Philox is not in `keras.ops`, so
draws come from an integer hash of (seed, index) in uint32 arithmetic, bit-identical on every backend. The TF and
JAX backends therefore choose the very same masks from the same inputs.
"""
import math

import numpy as np
from keras import ops

_INT32_MIN = -2**31
_INT32_MAX = 2**31 - 1


def _u32(value):
  return ops.convert_to_tensor(np.uint32(value & 0xFFFFFFFF))


def _i32(value):
  return ops.convert_to_tensor(np.int32(value))


def _mix(x):
  """A bijective 32-bit integer hash (lowbias32): every output bit depends on every input bit."""
  x = ops.bitwise_xor(x, ops.right_shift(x, _u32(16)))
  x = ops.multiply(x, _u32(0x7FEB352D))
  x = ops.bitwise_xor(x, ops.right_shift(x, _u32(15)))
  x = ops.multiply(x, _u32(0x846CA68B))
  return ops.bitwise_xor(x, ops.right_shift(x, _u32(16)))


def seed_pair(base: int, step):
  """An int32 [2] seed from a static base (run seed, layer, purpose) and the step (a tensor or an int)."""
  step = ops.cast(step, "int32")
  return ops.stack([ops.cast(_i32(base % (2**31 - 1)), "int32"), step])


def static_base(*parts) -> int:
  mixed = 0
  for part in parts:
    mixed = (mixed * 1000003 + int(part)) % (2**31 - 1)
  return mixed


def random_bits(size: int, seed):
  """`size` uint32 draws, a pure function of (seed, index)."""
  seed = ops.view(ops.cast(seed, "int32"), "uint32")
  key0 = _mix(ops.add(seed[0], _u32(0x9E3779B9)))
  key1 = _mix(ops.bitwise_xor(seed[1], key0))
  index = ops.view(ops.arange(size, dtype="int32"), "uint32")  # XLA (TF) has no uint32 range
  return _mix(ops.bitwise_xor(_mix(ops.add(ops.multiply(index, _u32(0x9E3779B1)), key1)), key0))


def tie_draws(size: int, seed):
  """One int32 draw per element; among equal scores the smaller draw wins."""
  return ops.view(random_bits(size, seed), "int32")


def uniform(shape, seed, low=0.0, high=1.0, dtype="float32"):
  """Seeded uniform floats in [low, high) from the top 24 bits of the draws."""
  size = int(np.prod(shape))
  top = ops.cast(ops.right_shift(random_bits(size, seed), _u32(8)), "float32") * (1.0 / 2**24)
  return ops.cast(ops.reshape(low + (high - low) * top, shape), dtype)


def normal(shape, seed, stddev=1.0, dtype="float32"):
  """Seeded standard normals (Box–Muller over two uniform draws), scaled by `stddev`."""
  size = int(np.prod(shape))
  u1 = 1.0 - uniform((size,), seed)  # in (0, 1]
  u2 = uniform((size,), ops.add(ops.cast(seed, "int32"), _i32(101)))
  z = ops.sqrt(-2.0 * ops.log(u1)) * ops.cos(2.0 * math.pi * u2)
  return ops.cast(ops.reshape(z * stddev, shape), dtype)


def ordered_keys(scores):
  """int32 keys ordered as the float scores are (−0 and +0 equal)."""
  scores = ops.cast(scores, "float32")
  scores = ops.where(ops.equal(scores, 0.0), ops.zeros_like(scores), scores)
  bits = ops.view(scores, "int32")
  # Negative floats grow in magnitude as their bit pattern grows: flip their magnitude bits below zero.
  return ops.where(bits >= 0, bits, ops.bitwise_xor(bits, _i32(_INT32_MAX)))


def _kth_largest(keys, candidates, k):
  """The largest int32 t with #{candidates with key >= t} >= k: a radix descent, most significant bit first.

  Thresholds are walked in the unsigned order of (t XOR sign bit), which is the signed order of t; setting the
  sign bit of the unsigned form is clearing it in the signed one.
  """
  k = ops.cast(k, "int32")

  def descend(i, threshold):
    bit = ops.left_shift(_i32(1), ops.cast(31 - i, "int32"))  # 1 << 31 is the sign bit
    candidate = ops.where(ops.equal(i, 0), ops.bitwise_xor(threshold, _i32(_INT32_MIN)),
                          ops.bitwise_or(threshold, bit))
    count = ops.sum(ops.cast(ops.logical_and(candidates, keys >= candidate), "int32"))
    return ops.where(count >= k, candidate, threshold)

  return ops.fori_loop(0, 32, descend, _i32(_INT32_MIN))


def largest(scores, candidates, count, seed):
  """Bool flags of the `count` candidates with the largest scores (1-D); ties by seeded draw, then index."""
  count = ops.cast(count, "int32")
  candidates = ops.cast(candidates, "bool")
  keys = ordered_keys(scores)
  threshold = _kth_largest(keys, candidates, count)
  above = ops.logical_and(candidates, keys > threshold)
  tied = ops.logical_and(candidates, ops.equal(keys, threshold))
  wanted = count - ops.sum(ops.cast(above, "int32"))
  # Among the tied, the `wanted` smallest draws: the same descent on the bit-inverted draws; equal draws by index.
  draws = ops.bitwise_invert(tie_draws(int(keys.shape[0]), seed))
  cut = _kth_largest(draws, tied, wanted)
  before = ops.logical_and(tied, draws > cut)
  at_cut = ops.logical_and(tied, ops.equal(draws, cut))
  room = wanted - ops.sum(ops.cast(before, "int32"))
  chosen = ops.logical_or(above, ops.logical_or(before, ops.logical_and(
      at_cut, ops.cumsum(ops.cast(at_cut, "int32")) <= room)))
  return ops.logical_and(chosen, count > 0)


def top_k_mask(scores, num_active, seed, candidates=None):
  """A float mask (shape of `scores`) keeping the `num_active` largest scores (among `candidates`)."""
  flat = ops.reshape(scores, (-1,))
  candidates = ops.ones_like(flat, dtype="bool") if candidates is None else ops.reshape(candidates, (-1,))
  keep = largest(flat, candidates, num_active, seed)
  return ops.reshape(ops.cast(keep, "float32"), ops.shape(scores))


def drop_and_grow(mask, drop_scores, grow_scores, drop_fraction, seed):
  """One drop/grow update (see tfmot_rigl.core.masks.drop_and_grow): (new float mask, bool new connections)."""
  flat_mask = ops.reshape(mask, (-1,)) > 0.5
  num_active = ops.sum(ops.cast(flat_mask, "int32"))
  num_drop = ops.cast(ops.floor(ops.cast(drop_fraction, "float32") * ops.cast(num_active, "float32")), "int32")
  seed = ops.cast(seed, "int32")
  keep = largest(ops.reshape(drop_scores, (-1,)), flat_mask, num_active - num_drop, seed)
  grow = largest(ops.reshape(grow_scores, (-1,)), ops.logical_not(keep), num_drop, ops.add(seed, _i32(1)))
  new_mask = ops.logical_or(keep, grow)
  new_connections = ops.logical_and(new_mask, ops.logical_not(flat_mask))
  shape = tuple(mask.shape)
  return ops.reshape(ops.cast(new_mask, mask.dtype), shape), ops.reshape(new_connections, shape)


# --- blocks (tfmot_rigl.core.blocks in keras.ops) ---------------------------------------------------------------
def reduce_blocks(tensor, block_shape, norm="l1"):
  n_in, n_out = tensor.shape[-2], tensor.shape[-1]
  b_in, b_out = block_shape
  tensor = ops.reshape(tensor, (n_in // b_in, b_in, n_out // b_out, b_out))
  if norm == "l2":
    tensor = ops.square(tensor)
  return ops.sum(tensor, axis=(1, 3))


def block_mask(mask, block_shape):
  n_in, n_out = mask.shape[-2], mask.shape[-1]
  b_in, b_out = block_shape
  return ops.max(ops.reshape(mask, (n_in // b_in, b_in, n_out // b_out, b_out)), axis=(1, 3))


def expand(grid_values, block_shape, shape):
  b_in, b_out = block_shape
  return ops.reshape(ops.repeat(ops.repeat(grid_values, b_in, axis=0), b_out, axis=1), tuple(shape))


# --- schedule (tfmot_rigl.core.schedule on tensors) ---------------------------------------------------------------
def is_update_step(step, begin_step: int, end_step: int, update_frequency: int):
  step = ops.cast(step, "int32")
  return ops.logical_and(ops.logical_and(step >= begin_step, step <= end_step),
                         ops.equal(ops.mod(step, update_frequency), 0))


def drop_fraction_at(step, drop_fraction: float, anneal: str, begin_step: int, end_step: int):
  t = ops.cast(step, "float32")
  if anneal == "constant":
    return ops.convert_to_tensor(np.float32(drop_fraction))
  if anneal == "cosine":
    return drop_fraction / 2.0 * (1.0 + ops.cos(math.pi * t / max(end_step, 1)))
  k = float(anneal.split("_", 1)[1])
  progress = ops.clip((t - begin_step) / max(end_step - begin_step, 1), 0.0, 1.0)
  return drop_fraction * ops.power(1.0 - progress, k)
