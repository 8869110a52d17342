"""RigL (Evci et al. 2020): drop the smallest weights, regrow where the dense gradient is largest."""
import math
import re

import tensorflow as tf

from tfmot_rigl.algorithms import base

# Largest RigL initial_acc_scale accepted (the reference and the paper use 0 to a few).
MAX_INITIAL_ACC_SCALE = 1e6


@base.register
class RigL(base.SparseAlgorithm):
  """Grow score |∂L/∂W| of the current batch, at every position including inactive ones.

  Extra knobs over SET: grow_init may also be `grad_scale` / `grad_sign` (new weights = gradient or its sign,
  optionally divided, e.g. grad_scale_10), and `initial_acc_scale` a: the momentum slot of a new connection starts
  as if it had already accumulated a·g, g the connection's dense gradient — so its first update moves it downhill,
  against g, by more than plain SGD would:
    Adam, AdamW, Nadam, Adamax (first moment m, an average of g): m = a·g;
    SGD with momentum, Nesterov or not (tf_keras keeps a velocity m ← μm − lr·g that is added to the weight):
      m = −lr·a·g, the velocity of the reference's TF1 momentum accumulator a·g;
    RMSprop with momentum (mom ← μ·mom + lr·g/(√ms + ε), subtracted from the weight): mom = lr·a·g/(|g| + ε),
      the step that gradient would take with ms = g²;
  second moments and accumulators (Adam v, RMSprop ms and its mean gradient, Adagrad, Ftrl) stay zero, so an
  optimizer without a momentum slot (plain SGD, RMSprop without momentum, Adagrad) is unchanged by the knob.
  """

  name = "rigl"
  _grow_init_names = base.SparseAlgorithm._grow_init_names + ("grad_scale", "grad_sign")

  def __init__(self, *args, initial_acc_scale: float = 0.0, **kwargs):
    super().__init__(*args, **kwargs)
    self.initial_acc_scale = float(initial_acc_scale)
    if not math.isfinite(self.initial_acc_scale) or not 0 <= self.initial_acc_scale <= MAX_INITIAL_ACC_SCALE:
      # A negative a seeds the momentum uphill; a huge one throws new weights off by about lr·a·g and the loss
      # diverges (a=-1e30: NaN at the first update).
      raise ValueError(f"RigL initial_acc_scale={initial_acc_scale!r} must be a finite number in [0, "
                       f"{MAX_INITIAL_ACC_SCALE:g}], e.g. 0 (new slots start at zero) or 1.")

  def get_config(self):
    return dict(super().get_config(), initial_acc_scale=self.initial_acc_scale)

  def grow_scores(self, layer):
    return tf.abs(layer.grad)

  def grow_values(self, layer):
    match = re.match(r"^(grad_scale|grad_sign)(?:_(\d+(?:\.\d+)?))?$", self.grow_init)
    if not match:
      return super().grow_values(layer)
    divisor = float(match.group(2) or 1.0)
    grad = layer.grad if match.group(1) == "grad_scale" else tf.sign(layer.grad)
    return grad / divisor

  def new_slot_values(self, layer, slot, kind="other", learning_rate=None):
    scale = self.initial_acc_scale
    if not scale or kind == "other":
      return tf.zeros_like(slot)
    grad = tf.cast(layer.grad, slot.dtype)
    if kind == "first_moment":
      return scale * grad
    learning_rate = tf.cast(learning_rate, slot.dtype)
    if kind == "velocity":
      return -learning_rate * scale * grad
    if kind == "momentum_step":
      return learning_rate * scale * grad / (tf.abs(grad) + 1e-7)
    raise ValueError(f"Unknown optimizer slot kind {kind!r}.")
