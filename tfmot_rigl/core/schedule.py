"""When masks change and by how much: the update window and the drop-fraction anneal.

Step t is an update step when begin_step <= t <= end_step and t is a multiple of the update frequency ΔT.
The drop fraction f(t) (α = drop_fraction):
  constant        α
  cosine          α/2 · (1 + cos(π · t / end_step))          (the paper's default)
  exponential_k   α · (1 − (t − begin)/(end − begin))^k
All functions accept Python numbers or scalar tensors, so they serve both the graph and the accounting.
"""
import math
import re
from typing import Optional, Union

import tensorflow as tf

ANNEALS = ("constant", "cosine", "exponential_k")
_EXPONENTIAL = re.compile(r"^exponential_(\d+(?:\.\d+)?)$")

Step = Union[int, float]


def check_anneal(anneal: str) -> str:
  if anneal in ("constant", "cosine") or _EXPONENTIAL.match(str(anneal)):
    return anneal
  raise ValueError(f"Unknown drop_fraction_anneal {anneal!r}; use constant, cosine or exponential_k "
                   "(k a number, e.g. exponential_3).")


def resolve_step(value: Step, total_steps: Optional[int], what: str) -> int:
  """An int is a step; a float in (0, 1] is a fraction of `total_steps` (which must then be given)."""
  if isinstance(value, bool):
    raise ValueError(f"{what}={value!r} must be a step number or a fraction of total steps.")
  if isinstance(value, float) and not (value > 1.0 and value.is_integer()):
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"{what}={value!r}: a float means a fraction of total training steps and must be in [0, 1].")
    if not total_steps:
      raise ValueError(f"{what}={value!r} is a fraction of training; pass total_steps (the number of training "
                       "steps) so it can be turned into a step.")
    return int(round(value * total_steps))
  if int(value) < 0:
    raise ValueError(f"{what}={value!r} is negative; steps count from 0.")
  return int(value)


def check_window(begin_step: int, end_step: int, update_frequency: int) -> None:
  if not isinstance(update_frequency, int) or update_frequency <= 0:
    raise ValueError(f"update_frequency={update_frequency!r} must be a positive number of steps, e.g. 100.")
  if end_step < begin_step:
    raise ValueError(f"end_step={end_step} is before begin_step={begin_step}; the update window must not be empty "
                     "backwards: choose end_step >= begin_step.")


def is_update_step(step, begin_step: int, end_step: int, update_frequency: int):
  """True at t with begin <= t <= end and t % ΔT == 0 (a bool tensor when `step` is a tensor)."""
  if isinstance(step, (int, float)):
    return begin_step <= step <= end_step and step % update_frequency == 0
  step = tf.cast(step, tf.int64)
  return tf.logical_and(
      tf.logical_and(step >= begin_step, step <= end_step),
      tf.equal(tf.math.floormod(step, update_frequency), 0))


def drop_fraction_at(step, drop_fraction: float, anneal: str, begin_step: int, end_step: int):
  """f(t) for the given anneal; a float32 tensor when `step` is a tensor, else a float."""
  symbolic = not isinstance(step, (int, float))
  t = tf.cast(step, tf.float32) if symbolic else float(step)
  cos = tf.cos if symbolic else math.cos
  if anneal == "constant":
    return tf.constant(drop_fraction, tf.float32) if symbolic else drop_fraction
  if anneal == "cosine":
    return drop_fraction / 2.0 * (1.0 + cos(math.pi * t / max(end_step, 1)))
  match = _EXPONENTIAL.match(str(anneal))
  if not match:
    check_anneal(anneal)
  k = float(match.group(1))
  progress = (t - begin_step) / max(end_step - begin_step, 1)
  if symbolic:
    progress = tf.clip_by_value(progress, 0.0, 1.0)
    return drop_fraction * tf.pow(1.0 - progress, k)
  return drop_fraction * (1.0 - min(max(progress, 0.0), 1.0)) ** k
