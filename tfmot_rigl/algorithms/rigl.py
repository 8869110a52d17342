"""RigL (Evci et al. 2020): drop the smallest weights, regrow where the dense gradient is largest."""
import math
import re

import tensorflow as tf

from tfmot_rigl.algorithms import base


@base.register
class RigL(base.SparseAlgorithm):
  """Grow score |∂L/∂W| of the current batch, at every position including inactive ones.

  Extra knobs over SET: grow_init may also be `grad_scale` / `grad_sign` (new weights = gradient or its sign,
  optionally divided, e.g. grad_scale_10), and `initial_acc_scale` sets the optimizer slots of new connections to
  initial_acc_scale · gradient instead of zero.
  """

  name = "rigl"
  _grow_init_names = base.SparseAlgorithm._grow_init_names + ("grad_scale", "grad_sign")

  def __init__(self, *args, initial_acc_scale: float = 0.0, **kwargs):
    super().__init__(*args, **kwargs)
    self.initial_acc_scale = float(initial_acc_scale)
    if not math.isfinite(self.initial_acc_scale):
      raise ValueError(f"RigL initial_acc_scale={initial_acc_scale!r} must be a finite number, e.g. 0 (new slots start "
                       "at zero) or 1.")

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

  def new_slot_values(self, layer, slot):
    if self.initial_acc_scale:
      return tf.cast(layer.grad * self.initial_acc_scale, slot.dtype)
    return tf.zeros_like(slot)
