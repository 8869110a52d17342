"""Gradual magnitude pruning (Zhu & Gupta 2017), the paper's baseline, delegated to TFMOT itself."""
from tfmot_rigl.algorithms import base


@base.register
class Magnitude(base.SparseAlgorithm):
  """Dense start, pruned to each layer's target by TFMOT's own PolynomialDecay schedule between begin and end.

  Nothing is re-implemented: layers are wrapped with TFMOT's `PruneLowMagnitude` and its schedule, so results are
  those of the library users already trust. Layer targets still come from the chosen distribution. `block_shape` is
  TFMOT's own `block_size` (blocks ranked by their mean |w|), which TFMOT applies to 2-D (Dense) kernels only.
  """

  name = "magnitude"
  dynamic = False
  uses_masks = False

  def __init__(self, update_frequency: int = 100, begin_step=0, end_step=0.75, power: int = 3, seed_offset: int = 0,
               block_shape=(1, 1), initial_sparsity=None):
    # initial_sparsity: PolynomialDecay's own (None: 0, a dense start), as Model Garden's pruning project sets it.
    super().__init__(update_frequency=update_frequency, begin_step=begin_step, end_step=end_step,
                     seed_offset=seed_offset, block_shape=block_shape, initial_sparsity=initial_sparsity)
    self.power = power

  def get_config(self):
    return {"update_frequency": self.update_frequency, "begin_step": self.begin_step, "end_step": self.end_step,
            "power": self.power, "seed_offset": self.seed_offset, "block_shape": list(self.block_shape),
            "initial_sparsity": self.initial_sparsity}
