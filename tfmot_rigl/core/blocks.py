"""Block masks: a mask constant over blocks of (b_in, b_out) entries of a kernel's [in, out] view.

Block sparsity is what makes a sparse Dense layer run faster: TFLite's fully-connected kernel computes with weights
stored in blocks (a Keras kernel block of (4, 1) — 4 consecutive inputs of one output unit — is a 1×4 block of the
[out, in] matrix TFLite stores). Masks of such layers are kept at block granularity: a block is wholly active or
wholly inactive, its drop score is the norm of its weights and its grow score the sum of its entries' scores, and
the distribution's sparsity counts blocks. Everything else (exact counts, ties, determinism) is the unstructured
mask math run on the block grid.

Kernels with a 2-D view (Dense kernels, and convolutions whose spatial dims are all 1, i.e. 1×1 convs) get blocks;
others (e.g. 3×3 convs) stay unstructured — their weights are not in a matrix TFLite could run block-sparse. So do
kernels the blocks do not tile (e.g. 300 inputs in blocks of 16): they are masked per element, and `prune_sparse`
names them in one line, rather than counting partial edge blocks that TFLite could not store as blocks either.
"""
from typing import Optional, Sequence, Tuple

import tensorflow as tf

BLOCK_NORMS = ("l1", "l2")


def check_block_shape(block_shape) -> Tuple[int, int]:
  """(b_in, b_out) as a tuple of positive ints; ValueError with what to pass otherwise."""
  try:
    b_in, b_out = (int(b) for b in block_shape)
    valid = (b_in, b_out) == tuple(block_shape) and b_in >= 1 and b_out >= 1
  except (TypeError, ValueError):
    valid = False
  if not valid:
    raise ValueError(f"block_shape={block_shape!r} must be two positive integers (b_in, b_out): blocks of b_in "
                     "consecutive inputs by b_out outputs of a Dense kernel, e.g. (4, 1); (1, 1) is unstructured.")
  return b_in, b_out


def check_block_norm(block_norm: str) -> str:
  if block_norm not in BLOCK_NORMS:
    raise ValueError(f"block_norm={block_norm!r} is unknown; use 'l1' (sum of |w|) or 'l2' (Euclidean norm) as a "
                     "block's drop score.")
  return block_norm


def applies(shape: Sequence[int], block_shape) -> bool:
  """Whether a kernel of `shape` is masked in blocks: a non-trivial block and a 2-D view (leading dims all 1)."""
  shape = [int(d) for d in shape]
  return tuple(block_shape) != (1, 1) and len(shape) >= 2 and all(d == 1 for d in shape[:-2])


def tiles(shape: Sequence[int], block_shape) -> bool:
  """Whether blocks of `block_shape` tile the [in, out] view of a kernel of `shape` exactly."""
  return int(shape[-2]) % block_shape[0] == 0 and int(shape[-1]) % block_shape[1] == 0


def grid_shape(shape: Sequence[int], block_shape, name: Optional[str] = None) -> Tuple[int, int]:
  """(in / b_in, out / b_out): the block grid of a kernel; ValueError when the blocks do not tile it."""
  n_in, n_out = int(shape[-2]), int(shape[-1])
  b_in, b_out = block_shape
  if n_in % b_in or n_out % b_out:
    what = f"kernel of layer {name!r}" if name else "kernel"
    raise ValueError(f"{what} has shape {tuple(int(d) for d in shape)}, whose [in, out] = ({n_in}, {n_out}) is not "
                     f"divisible into blocks of {tuple(block_shape)}; use a block_shape that divides it, or leave "
                     "the layer out (exclude) or dense.")
  return n_in // b_in, n_out // b_out


def reduce_blocks(tensor, block_shape, norm: str = "l1"):
  """Kernel-shaped non-negative scores summed per block ('l1'), or their squares summed ('l2', the norm squared)."""
  n_in, n_out = tensor.shape[-2], tensor.shape[-1]
  b_in, b_out = block_shape
  tensor = tf.reshape(tensor, [n_in // b_in, b_in, n_out // b_out, b_out])
  if norm == "l2":
    tensor = tf.square(tensor)  # ranks as the Euclidean norm does, without the square root
  return tf.reduce_sum(tensor, axis=[1, 3])


def block_mask(mask, block_shape):
  """The [in / b_in, out / b_out] mask of a block-constant kernel mask (a block is active if any entry is)."""
  n_in, n_out = mask.shape[-2], mask.shape[-1]
  b_in, b_out = block_shape
  return tf.reduce_max(tf.reshape(mask, [n_in // b_in, b_in, n_out // b_out, b_out]), axis=[1, 3])


def expand(grid_values, block_shape, shape):
  """Each block's value repeated over its entries, in the kernel's `shape`."""
  b_in, b_out = block_shape
  return tf.reshape(tf.repeat(tf.repeat(grid_values, b_in, axis=0), b_out, axis=1), shape)
