"""Where the first masks come from (`initial_mask`): random, by the pretrained weights' magnitude, or a checkpoint.

  * random (default): the paper's from-scratch start — static, SET, RigL and SNFS draw uniformly random masks at each
    layer's sparsity; SNIP starts dense until its one shot and gradual magnitude pruning starts dense (TFMOT).
  * magnitude: each layer keeps its largest |W| at its sparsity (in blocks: the blocks of largest `block_norm`), the
    start that does not destroy a pretrained model. Gradual magnitude pruning then starts at its final sparsity
    (its PolynomialDecay held there) instead of dense.
  * checkpoint: the masks the init checkpoint holds (`tfmot_rigl.keras.pretrained.load_pretrained`, or
    `task.init_checkpoint` in Model Garden), which must have each layer's sparsity.
Masks are set again, and the weights multiplied by them, whenever weights are loaded into the model afterwards
(`reset_masks`), so a mask always describes the weights the model trains from.
"""
import zlib

import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl.core import distributions
from tfmot_rigl.core import masks as mask_math

INITIAL_MASKS = ("random", "magnitude", "checkpoint")
_ATTRIBUTE = "_tfmot_rigl_initial_mask"  # on TFMOT's own wrappers (magnitude), which have no such constructor knob


def check_initial_mask(initial_mask: str, algorithm) -> str:
  """`initial_mask` if valid for `algorithm`, else a ValueError naming what to use."""
  if initial_mask not in INITIAL_MASKS:
    raise ValueError(f"initial_mask={initial_mask!r} is unknown; use one of {', '.join(INITIAL_MASKS)}.")
  if initial_mask != "random" and algorithm.name == "snip":
    raise ValueError(f"initial_mask={initial_mask!r} does not apply to SNIP, which chooses its masks by its one shot "
                     "(|g·W| on the first batch, from the weights it starts with); leave initial_mask=random, or "
                     "use static with initial_mask=magnitude.")
  return initial_mask


def mark(wrapper, initial_mask: str) -> None:
  """Records on a TFMOT wrapper where its first mask comes from (SparseWrapper keeps it in its config)."""
  object.__setattr__(wrapper, _ATTRIBUTE, initial_mask)


def initial_mask_of(wrapper) -> str:
  return getattr(wrapper, "initial_mask", None) or getattr(wrapper, _ATTRIBUTE, "random")


def _target(wrapper, index: int) -> float:
  """The sparsity the index-th weight starts training at (gradual pruning: its initial sparsity)."""
  if hasattr(wrapper, "initial_sparsity_of"):
    return wrapper.initial_sparsity_of(index)
  return float(wrapper.pruning_schedule.final_sparsity)


def _seed(wrapper, index: int):
  if hasattr(wrapper, "layer_seed"):
    return wrapper.layer_seed(-1, index)
  return mask_math.stateless_seed(zlib.crc32(wrapper.layer.name.encode()) % (1 << 16), index, -1)


def _algorithm(wrapper):
  if hasattr(wrapper, "algorithm"):
    return wrapper.algorithm
  from tfmot_rigl import algorithms  # TFMOT's wrapper: its block_size is the algorithm's block_shape (Dense only)
  return algorithms.Magnitude(block_shape=tuple(wrapper.block_size))


def first_mask(wrapper, index: int, weight) -> tf.Tensor:
  """The float mask of the index-th prunable weight of `wrapper` before training (the checkpoint's: random until
  loaded)."""
  algorithm, sparsity, seed = _algorithm(wrapper), _target(wrapper, index), _seed(wrapper, index)
  if initial_mask_of(wrapper) == "magnitude":
    return algorithm.magnitude_mask(weight, sparsity, seed)
  if not isinstance(wrapper, pruning_wrapper.PruneLowMagnitude) or hasattr(wrapper, "algorithm"):
    return tf.cast(algorithm.initial_mask(weight.shape, sparsity, seed), tf.float32)
  return tf.ones(weight.shape, tf.float32)  # TFMOT's gradual pruning starts dense


def _variable(weight):
  return getattr(weight, "_variable", weight)  # the float32 variable under an AutoCastVariable


def reset_masks(wrappers, masks=None, weights_loaded: bool = False) -> None:
  """Sets every wrapper's masks from its `initial_mask` and the weights it holds now, and masks those weights.

  Args:
    wrappers: pruning wrappers (SparseWrapper or TFMOT's), built.
    masks: {id(mask variable): array} for initial_mask="checkpoint" (from `pretrained.plan_load`).
    weights_loaded: the weights were just loaded (unmasked) from a checkpoint, so grow_init=initial_dist's copy of
      the initial weights is taken from them; otherwise the copy the wrapper took at build (before masking) stays.
  """
  for wrapper in wrappers:
    kind = initial_mask_of(wrapper)
    if kind == "random" and not hasattr(wrapper, "algorithm"):
      continue  # TFMOT's gradual pruning: dense start, masks all ones
    for index, (weight, mask, _) in enumerate(wrapper.pruning_vars):
      weight = _variable(weight)
      if weights_loaded and index < len(getattr(wrapper, "initial_weights", [])):
        wrapper.initial_weights[index].assign(weight)  # grow_init=initial_dist draws from the loaded weights
      if kind == "checkpoint" and masks is not None and id(mask) in masks:
        value = tf.cast(masks[id(mask)] != 0, mask.dtype)
      elif kind in ("random", "checkpoint"):  # checkpoint: a layer not loaded (a new head) keeps its first mask
        value = mask  # the seeded random mask drawn at build: independent of the weights
      else:
        value = first_mask(wrapper, index, weight)
      mask.assign(tf.cast(value, mask.dtype))
      weight.assign(weight * tf.cast(mask, weight.dtype))


SPARSITY_TOLERANCE = 0.02  # checkpoint masks vs the model's targets: global sparsity of the loaded kernels


def check_checkpoint_sparsity(entries) -> None:
  """Checkpoint masks must have the model's sparsity over the kernels they cover; ValueError naming one otherwise.

  Per layer they may differ (an ERK split computed with another head moves every layer a little); over all loaded
  kernels the fraction of zeros must be within SPARSITY_TOLERANCE of what the model's distribution gives them.

  Args:
    entries: [(wrapper, index, mask value, weight name)].
  """
  counts = []
  for wrapper, index, value, name in entries:
    size = int(tf.size(value))
    zeros = size - int(tf.math.count_nonzero(value))
    counts.append((name, size, zeros, size - distributions.nonzeros(size, _target(wrapper, index))))
  total = sum(size for _, size, _, _ in counts)
  if not total:
    return
  found, expected = sum(c[2] for c in counts) / total, sum(c[3] for c in counts) / total
  if abs(found - expected) <= SPARSITY_TOLERANCE:
    return
  name, size, zeros, wanted = max(counts, key=lambda c: abs(c[2] - c[3]) / c[1])
  raise ValueError(f"the init checkpoint's masks have sparsity {found:.4f}, this model {expected:.4f} over the same "
                   f"kernels; first misfit: {name} at {zeros / size:.4f} ({zeros} of {size} zeros), here "
                   f"{wanted / size:.4f}; use a checkpoint trained at task.sparsity.sparsity, or "
                   "initial_mask=magnitude.")
