"""Gradual sparsity of the dynamic methods (GraNet-style): each layer starts denser and is pruned by magnitude to its
target on a cubic schedule while drop/grow goes on.

Layer l's sparsity at step t is s(t) = s_f + (s_0 − s_f)·(1 − p)³ with p = (t − begin)/(prune_end − begin) clipped to
[0, 1] (p = 1 from prune_end on when the two coincide); s_0 and s_f are the layer's sparsities from the distribution
at the global initial and final sparsity. At an update step t the layer keeps its largest |W| down to
units − floor(s(t)·units) active units (entries, or blocks with `block_shape`), then drops and regrows the drop
fraction of those.

Everything here is plain Python on numbers: the graph reads the same counts from a table built by `active_counts`,
and the accounting sums FLOPs from it, so the two agree to the unit.
"""
import math
from typing import List, Optional

import numpy as np


def check_initial_sparsity(value) -> Optional[float]:
  """None (off) or a fraction of zeros in [0, 1); ValueError otherwise."""
  if value is None:
    return None
  if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not (
      0.0 <= float(value) < 1.0):
    raise ValueError(f"initial_sparsity={value!r} must be None (no gradual pruning) or a fraction of zeros in [0, 1) "
                     "at which training starts, e.g. 0.5.")
  return float(value)


def sparsity_at(step: int, initial: float, final: float, begin: int, prune_end: int) -> float:
  """s(t) of one layer: s_0 up to begin, s_f from prune_end on, the cubic in between (exact at both ends)."""
  if step <= begin and step < prune_end:
    return float(initial)
  if step >= prune_end:
    return float(final)
  remaining = 1.0 - (step - begin) / (prune_end - begin)
  return float(final + (initial - final) * (remaining * remaining * remaining))


def active_units(units: int, sparsity: float) -> int:
  """Active units of a layer with `units` entries (or blocks) at `sparsity`: units − floor(s·units)."""
  return int(units) - int(math.floor(sparsity * units))


def active_counts(units: int, initial: float, final: float, begin: int, prune_end: int,
                  update_frequency: int) -> List[int]:
  """counts[k]: active units after an update at step k·ΔT, for k = 0 .. ceil(prune_end/ΔT) (the last is final).

  A running minimum from the initial count: the count never grows, even where rounding of s(t) would wobble.
  Steps past the table use its last entry (the final count).
  """
  last = -(-max(prune_end, 0) // update_frequency)
  counts, current = [], active_units(units, initial)
  for k in range(last + 1):
    current = min(current, active_units(units, sparsity_at(k * update_frequency, initial, final, begin, prune_end)))
    counts.append(current)
  return counts


def count_after_update(counts: List[int], step: int, update_frequency: int) -> int:
  """The table's count for an update at `step` (what the graph gathers)."""
  return counts[min(step // update_frequency, len(counts) - 1)]
