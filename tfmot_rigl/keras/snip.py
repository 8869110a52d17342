"""`apply_snip`: SNIP's one-shot masks from chosen batches (optionally several, averaged) before training.

Without it, the wrapped optimizer scores SNIP on the first training batch by itself (see algorithms/snip.py).
"""
import tensorflow as tf

from tfmot_rigl.algorithms import SNIP
from tfmot_rigl.keras import attach
from tfmot_rigl.keras.prune import sparse_wrappers


def _batches(source, num_batches):
  if isinstance(source, tuple) and len(source) == 2:
    return [source]
  if isinstance(source, tf.data.Dataset):
    return list(source.take(num_batches))
  return list(source)[:num_batches]


def apply_snip(model, batches, loss_fn, num_batches: int = 1):
  """Sets the masks of the SNIP layers of `model` from |∂L/∂W ⊙ W| averaged over `num_batches` batches.

  Args:
    model: a model from `prune_sparse(..., algorithm=SNIP())`, before training.
    batches: one `(x, y)` batch, or a `tf.data.Dataset` / iterable of `(x, y)` batches.
    loss_fn: `loss_fn(y_true, y_pred)`, e.g. a tf_keras loss.
    num_batches: how many batches of `batches` to average the scores over.
  """
  if batches is None:
    raise ValueError("SNIP needs a batch source: pass apply_snip(model, (x, y) or a dataset of batches, loss_fn), "
                     "or just train with the wrapped optimizer, which scores the first training batch.")
  wrappers = [w for w in sparse_wrappers(model) if isinstance(getattr(w, "algorithm", None), SNIP)]
  if not wrappers:
    raise ValueError(f"Model {model.name!r} has no SNIP layers; build it with prune_sparse(model, algorithm=SNIP()).")
  chosen = _batches(batches, num_batches)
  if not chosen:
    raise ValueError("SNIP got an empty batch source; give at least one (x, y) batch.")
  targets = [(w, index, kernel, mask) for w in wrappers for index, (kernel, mask, _) in enumerate(w.pruning_vars)]
  for _, _, _, mask in targets:  # score every connection of the dense network
    mask.assign(tf.ones_like(mask))
  kernels = [kernel for _, _, kernel, _ in targets]
  scores = [tf.zeros_like(k) for k in kernels]
  for x, y in chosen:
    with tf.GradientTape() as tape, attach.scoring():
      loss = loss_fn(y, model(x, training=False))
    grads = tape.gradient(loss, kernels)
    scores = [s + SNIP.scores(k, g) / len(chosen) for s, k, g in zip(scores, kernels, grads)]
  for (wrapper, index, kernel, mask), score in zip(targets, scores):
    new_mask = wrapper.algorithm.keep_largest(score, wrapper.sparsity_of(index), wrapper.layer_seed(0, index))
    mask.assign(tf.cast(new_mask, mask.dtype))
    kernel.assign(kernel * tf.cast(new_mask, kernel.dtype))
