"""Update window and drop-fraction anneal (REFERENCE.md, "Dynamic sparse training")."""
import math

import numpy as np
import pytest
import tensorflow as tf

from tfmot_rigl.core import schedule


def test_update_steps_are_multiples_of_frequency_inside_window():
  steps = [t for t in range(0, 1001) if schedule.is_update_step(t, 200, 700, 100)]
  assert steps == [200, 300, 400, 500, 600, 700]
  tensor_steps = [t for t in range(0, 1001) if bool(schedule.is_update_step(tf.constant(t), 200, 700, 100))]
  assert tensor_steps == steps


@pytest.mark.parametrize("step", [0, 250, 500, 750])
def test_cosine_anneal(step):
  expected = 0.3 / 2 * (1 + math.cos(math.pi * step / 750))
  assert schedule.drop_fraction_at(step, 0.3, "cosine", 0, 750) == pytest.approx(expected)
  np.testing.assert_allclose(schedule.drop_fraction_at(tf.constant(step), 0.3, "cosine", 0, 750), expected, rtol=1e-6)


def test_constant_anneal():
  assert schedule.drop_fraction_at(123, 0.3, "constant", 0, 750) == 0.3


def test_exponential_anneal_at_four_steps():
  # α · (1 − (t − begin)/(end − begin))^k with α=0.4, k=3, begin=100, end=500
  for step, progress in [(100, 0.0), (200, 0.25), (300, 0.5), (400, 0.75)]:
    expected = 0.4 * (1 - progress) ** 3
    assert schedule.drop_fraction_at(step, 0.4, "exponential_3", 100, 500) == pytest.approx(expected)
    np.testing.assert_allclose(schedule.drop_fraction_at(tf.constant(step), 0.4, "exponential_3", 100, 500),
                               expected, rtol=1e-6)


def test_unknown_anneal_lists_valid_ones():
  with pytest.raises(ValueError, match="constant, cosine or exponential_k"):
    schedule.check_anneal("linear")


def test_fractional_steps_resolve_against_total_steps():
  assert schedule.resolve_step(0.75, 32000, "end_step") == 24000
  assert schedule.resolve_step(0.25, 1000, "begin_step") == 250
  assert schedule.resolve_step(1.0, 1000, "end_step") == 1000
  assert schedule.resolve_step(500, None, "end_step") == 500
  with pytest.raises(ValueError, match="pass total_steps"):
    schedule.resolve_step(0.75, None, "end_step")


def test_window_errors():
  with pytest.raises(ValueError, match="update_frequency=0 must be a positive"):
    schedule.check_window(0, 10, 0)
  with pytest.raises(ValueError, match="end_step=5 is before begin_step=10"):
    schedule.check_window(10, 5, 1)
