"""SNFS (Dettmers & Zettlemoyer 2019), without redistribution: grow where the gradient's momentum is largest."""
import tensorflow as tf

from tfmot_rigl.algorithms import base


@base.register
class SNFS(base.SparseAlgorithm):
  """Grow score |EMA of the dense gradient|, the EMA updated every step: ema ← m·ema + (1 − m)·grad.

  Layer-wise sparsities stay those of the distribution (the paper's comparison omits SNFS's redistribution).
  """

  name = "snfs"

  def __init__(self, *args, momentum: float = 0.9, **kwargs):
    super().__init__(*args, **kwargs)
    if not 0.0 <= momentum < 1.0:
      raise ValueError(f"SNFS momentum={momentum!r} must be in [0, 1), e.g. 0.9.")
    self.momentum = float(momentum)

  def get_config(self):
    return dict(super().get_config(), momentum=self.momentum)

  def state_names(self):
    return ("grad_ema",)

  def update_state(self, state, grad):
    return {"grad_ema": self.momentum * state["grad_ema"] + (1.0 - self.momentum) * grad}

  def grow_scores(self, layer):
    return tf.abs(layer.state["grad_ema"])
