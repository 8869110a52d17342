"""Imported masks against the config they are imported under: an override must not contradict the checkpoint.

`tfm import-checkpoint` builds the experiment's model from the config (its masks drawn at the configured per-layer
sparsities) and then overwrites the masks with the checkpoint's. A config that asks for other sparsities, say
`task.sparsity.sparsity=0.5` for a 75% checkpoint, would be written to params.yaml beside masks that say otherwise,
and every later `tfm train` restart, `tfm report` and export would read the wrong one. The per-layer mask
sparsities before and after the import are compared instead, so every mask-shaping field (sparsity, distribution,
custom_sparsities, first_layer_dense, exclude, block_shape, ...) is covered by one check.
"""
from typing import Dict, Optional

import numpy as np

from tfmot_rigl import keras as sparse_keras

# Mask sparsities differ by rounding (the reference floors per-layer counts, 1000 vs 1001 head classes): a
# contradiction is a larger difference than this in some layer.
TOLERANCE = 0.02


def mask_sparsities(model) -> Dict[str, float]:
  """{kernel name: fraction of zeros of its mask} of every masked kernel of the model."""
  sparsities = {}
  for wrapper in sparse_keras.sparse_wrappers(model):
    for weight, mask, _ in wrapper.pruning_vars:
      values = mask.numpy()
      sparsities[weight.name] = float(1.0 - np.count_nonzero(values) / values.size)
  return sparsities


def contradiction(params, configured: Dict[str, float], imported: Dict[str, float]) -> Optional[str]:
  """Why the imported masks contradict the config (None if every layer agrees within TOLERANCE)."""
  if not any(configured.values()):
    return None  # masks that start dense (magnitude pruning): the config fixes no per-layer sparsity to compare
  worst = max(configured, key=lambda name: abs(configured[name] - imported.get(name, configured[name])),
              default=None)
  if worst is None or abs(configured[worst] - imported.get(worst, configured[worst])) <= TOLERANCE:
    return None
  sparsity = params.task.sparsity
  return (f'the checkpoint contradicts the config: its mask of {worst} has sparsity {imported[worst]:.3f}, the '
          f'config (task.sparsity.sparsity={sparsity.sparsity}, distribution={sparsity.distribution!r}) gives '
          f'{configured[worst]:.3f}; pass the checkpoint\'s row of official_configs/ as --config_file and leave '
          'task.sparsity as it is (nothing was written).')
