"""Training FLOPs per method: the paper's formulas, and the step-by-step sum of gradual pruning.

Training FLOPs per example (backward = 2 × forward; f_S / f_D sparse / dense forward FLOPs), from the paper:
static, SET and SNIP 3·f_S (SNIP adds one dense forward/backward batch for its one-shot scores); SNFS 2·f_S + f_D;
RigL (3·f_S·ΔT + 2·f_S + f_D)/(ΔT + 1); dense 3·f_D; gradual magnitude pruning 3·f_D·(mean density over the
schedule), computed exactly as the mean over steps of 3·f(t), f(t) being the forward FLOPs at step t's sparsity.

Gradual pruning of SET, RigL and SNFS (core/gradual.py) changes the density as training goes, so its FLOPs are summed
step by step: f(t) is the forward FLOPs of the masks in use at step t (each layer at its initial count until the
first update, then at each update's count from the next step on); a step costs 3·f(t), except that RigL's update
steps cost 2·f(t) + f_D (the dense gradient) and every SNFS step 2·f(t) + f_D. `GradualPlan` says which kernels
follow which counts; `gradual_phases` turns it into (first step, f) pieces and `stepwise_flops_per_step` sums them.
"""
import dataclasses
from typing import Callable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from tfmot_rigl.core import gradual
from tfmot_rigl.core import schedule

TRAINING_METHODS = ("dense", "static", "set", "snip", "snfs", "rigl", "magnitude")


@dataclasses.dataclass(frozen=True)
class GradualKernel:
  """One kernel under gradual pruning: its op in the accounting's op list and how its count evolves."""
  op_index: int
  units: int        # entries, or blocks under block masks
  unit_size: int    # entries per unit (1, or b_in · b_out)
  initial: float    # s_0 of this kernel
  final: float      # s_f of this kernel


@dataclasses.dataclass(frozen=True)
class GradualPlan:
  """Gradual pruning of a model: its kernels and the resolved schedule (steps)."""
  kernels: Tuple[GradualKernel, ...]
  begin_step: int
  prune_end: int
  end_step: int
  update_frequency: int

  def update_steps(self, steps: int) -> List[int]:
    """Update steps of a `steps`-step run: multiples of ΔT in [begin, end] before `steps`."""
    first = -(-self.begin_step // self.update_frequency) * self.update_frequency
    return list(range(first, min(self.end_step, steps - 1) + 1, self.update_frequency))

  def counts_after(self, step: Optional[int]) -> Tuple[int, ...]:
    """Active units of each kernel after the update at `step` (None: the initial masks)."""
    counts = []
    for kernel in self.kernels:
      if step is None:
        counts.append(gradual.active_units(kernel.units, kernel.initial))
        continue
      table = gradual.active_counts(kernel.units, kernel.initial, kernel.final, self.begin_step, self.prune_end,
                                    self.update_frequency)
      counts.append(gradual.count_after_update(table, step, self.update_frequency))
    return tuple(counts)

  def nonzeros_after(self, step: Optional[int]) -> Mapping[int, int]:
    """{op index: nonzero entries} after the update at `step` (None: initially)."""
    return {kernel.op_index: count * kernel.unit_size for kernel, count in zip(self.kernels, self.counts_after(step))}


def gradual_phases(plan: GradualPlan, steps: int, forward_flops: Callable[[Mapping[int, int]], float]):
  """[(first step, forward FLOPs)] of a `steps`-step run, from step 0; a new piece where an update changes a count.

  `forward_flops(nonzeros)` counts one forward pass with those op indices at those nonzeros.
  """
  phases, last = [(0, forward_flops(plan.nonzeros_after(None)))], plan.counts_after(None)
  for step in plan.update_steps(steps):
    counts = plan.counts_after(step)
    if counts != last and step + 1 < steps:
      phases.append((step + 1, forward_flops(plan.nonzeros_after(step))))
    last = counts
  return phases


def stepwise_flops_per_step(method: str, phases: Sequence[Tuple[int, float]], f_dense: float, steps: int,
                            update_steps: Sequence[int]) -> float:
  """Σ over steps 0 … steps−1 of one example's training FLOPs (see the module docstring), from `gradual_phases`."""
  if method not in ("set", "rigl", "snfs"):
    raise ValueError(f"Gradual pruning is an option of set, rigl and snfs, not {method!r}.")
  total = 0.0
  bounds = [start for start, _ in phases[1:]] + [steps]
  updates = np.asarray(update_steps, dtype=np.int64)
  for (start, flops), stop in zip(phases, bounds):
    count = stop - start
    if method == "snfs":
      total += (2.0 * flops + f_dense) * count
      continue
    total += 3.0 * flops * count
    if method == "rigl":  # its update steps in this piece cost 2·f + f_D instead of 3·f
      total += int(np.sum((updates >= start) & (updates < stop))) * (f_dense - flops)
  return total


def magnitude_mean_pruned_fraction(steps: int, begin_step=0, end_step=0.75, frequency: int = 100,
                                   power: int = 3) -> float:
  """Mean over training steps 0..steps−1 of s(t)/s_final under TFMOT's PolynomialDecay from sparsity 0.

  TFMOT re-thresholds masks only at steps begin + k·frequency within [begin, end]; at such a step p it sets
  s_final·(1 − (1 − (p − begin)/(end − begin))^power) and that mask stays until the next pruning step. Before the
  first pruning step the network is dense. Each layer follows this curve scaled by its own target, and forward
  FLOPs are affine in every layer's density, so the mean forward FLOPs are exactly f_D + fraction·(f_S − f_D);
  when FLOPs are proportional to density that is f_D·(mean density). `begin_step` / `end_step` may be fractions
  of `steps`, as in the algorithms' windows.
  """
  if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps <= 0:
    raise ValueError(f"steps={steps!r} must be a positive number of training steps.")
  begin = schedule.resolve_step(begin_step, steps, "begin_step")
  end = schedule.resolve_step(end_step, steps, "end_step")
  schedule.check_window(begin, end, frequency)
  prune_steps = np.arange(begin, min(end, steps - 1) + 1, frequency, dtype=np.float64)
  if prune_steps.size == 0:
    return 0.0  # pruning would start after the last step: dense throughout
  if end > begin:
    progress = np.clip((prune_steps - begin) / (end - begin), 0.0, 1.0)
  else:
    progress = np.ones_like(prune_steps)  # a one-step window prunes straight to the target
  fraction = 1.0 - (1.0 - progress) ** power
  held_for = np.diff(np.append(prune_steps, steps))  # steps each mask stays in use
  return float(np.sum(fraction * held_for) / steps)


def training_flops_per_example(method: str, f_sparse: float, f_dense: float, *, update_frequency: int = 100,
                               steps: Optional[int] = None, begin_step=0, end_step=0.75, power: int = 3) -> float:
  """Average training FLOPs of one example in one step (forward + backward), by the paper's formulas.

  Args:
    method: one of TRAINING_METHODS.
    f_sparse: forward FLOPs of the sparse network (for magnitude pruning: at its final sparsity).
    f_dense: forward FLOPs of the dense network.
    update_frequency: RigL's ΔT; magnitude pruning's pruning frequency.
    steps, begin_step, end_step, power: magnitude pruning's schedule (begin/end may be fractions of `steps`).
  """
  if method in ("static", "set", "snip"):
    return 3.0 * f_sparse
  if method == "snfs":
    # SNFS needs the dense gradient at every step (for its momentum).
    return 2.0 * f_sparse + f_dense
  if method == "rigl":
    # The dense gradient is needed only once every ΔT steps.
    if isinstance(update_frequency, bool) or not isinstance(update_frequency, int) or update_frequency <= 0:
      raise ValueError(f"update_frequency={update_frequency!r} must be a positive number of steps, e.g. 100.")
    return (3.0 * f_sparse * update_frequency + 2.0 * f_sparse + f_dense) / (update_frequency + 1)
  if method == "dense":
    return 3.0 * f_dense
  if method == "magnitude":
    if steps is None:
      raise ValueError("Magnitude pruning's training FLOPs depend on its schedule; pass steps (the training steps).")
    fraction = magnitude_mean_pruned_fraction(steps, begin_step, end_step, update_frequency, power)
    return 3.0 * (f_dense + fraction * (f_sparse - f_dense))
  raise ValueError(f"Unknown training method {method!r}; use one of {', '.join(TRAINING_METHODS)}.")


def training_flops(method: str, f_sparse: float, f_dense: float, steps: int, batch_size: int, *,
                   multiplier: float = 1.0, update_frequency: int = 100, begin_step=0, end_step=0.75,
                   power: int = 3) -> float:
  """Total training FLOPs: per-example FLOPs × examples seen (steps · multiplier · batch_size).

  `multiplier` is the paper's extended training (e.g. 5 for "5×"): it multiplies the steps; fractional begin/end
  steps of magnitude pruning then refer to the extended run.
  """
  if steps is None or batch_size is None or steps <= 0 or batch_size <= 0 or multiplier <= 0:
    raise ValueError(f"steps={steps!r}, batch_size={batch_size!r} and multiplier={multiplier!r} must all be > 0.")
  total_steps = int(round(steps * multiplier))
  per_example = training_flops_per_example(method, f_sparse, f_dense, update_frequency=update_frequency,
                                           steps=total_steps, begin_step=begin_step, end_step=end_step, power=power)
  total = per_example * total_steps * batch_size
  if method == "snip":
    # SNIP's one-shot scores |∂L/∂W ⊙ W|: one dense forward and backward pass over one batch, before training.
    total += 3.0 * f_dense * batch_size
  return total


