"""`prune_sparse`'s side of gradual pruning (core/gradual.py): each layer's starting sparsity from the distribution."""
from typing import Callable, Optional, Sequence, Tuple


def initial_sparsities(algorithm, sparsity: float, distribute: Optional[Callable[[float], dict]]) -> dict:
  """{name: sparsity} of the distribution at `algorithm.initial_sparsity` (empty when not gradual or no model).

  `distribute(s)` is the model's distribution at global sparsity s, with the same knobs as the target's.
  """
  if not algorithm.gradual:
    return {}
  if algorithm.initial_sparsity > sparsity:
    raise ValueError(f"initial_sparsity={algorithm.initial_sparsity} is above sparsity={sparsity}: gradual pruning "
                     "starts denser than the target; choose initial_sparsity <= sparsity (e.g. 0.5).")
  return distribute(algorithm.initial_sparsity) if distribute is not None else {}


def layer_start(algorithm, weights: Sequence[Tuple[float, float, Optional[float]]], prune_end):
  """(layer's initial sparsity, prune_end, per-weight initial sparsities or None) for `_make_wrapper`, or None.

  `weights`: (final sparsity, size, initial sparsity) of each prunable weight of the layer; the layer's initial
  sparsity is their size-weighted mean, as its target is.
  """
  if not algorithm.gradual:
    return None
  size = sum(n for _, n, _ in weights)
  starts = [s0 for _, _, s0 in weights]
  return float(sum(s0 * n for _, n, s0 in weights) / size), prune_end, starts if len(starts) > 1 else None
