"""Baselines without mask updates: static random masks, and dense training."""
from tfmot_rigl.algorithms import base


@base.register
class Static(base.SparseAlgorithm):
  """Random masks from the distribution, fixed for all of training."""

  name = "static"
  dynamic = False

  def __init__(self, seed_offset: int = 0, block_shape=(1, 1)):
    super().__init__(seed_offset=seed_offset, block_shape=block_shape)

  def get_config(self):
    return {"seed_offset": self.seed_offset, "block_shape": list(self.block_shape)}


@base.register
class Dense(base.SparseAlgorithm):
  """No masks at all: `prune_sparse` returns the model unchanged. Lets one config key switch every method."""

  name = "dense"
  dynamic = False
  uses_masks = False

  def __init__(self):
    super().__init__()

  def get_config(self):
    return {}
