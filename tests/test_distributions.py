"""Layer-wise sparsity distributions (REFERENCE.md, "Layer-wise sparsity distributions")."""
import numpy as np
import pytest

from tfmot_rigl.core.distributions import layer_sparsities, nonzeros

SHAPES = {"conv1": (3, 3, 3, 16), "conv2": (3, 3, 16, 32), "conv3": (3, 3, 32, 64), "fc": (64, 10)}


def _global_sparsity(shapes, sparsities):
  sizes = {n: np.prod(s) for n, s in shapes.items()}
  zeros = sum(sizes[n] - nonzeros(sizes[n], sparsities[n]) for n in shapes)
  return zeros, sum(sizes.values())


@pytest.mark.parametrize("distribution", ["er", "erk", "uniform"])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9, 0.95])
def test_global_target_hit_within_one_parameter_per_layer(distribution, sparsity):
  result = layer_sparsities(SHAPES, sparsity, distribution, first_layer_dense=False)
  zeros, total = _global_sparsity(SHAPES, result)
  assert abs(zeros - sparsity * total) <= len(SHAPES)


def test_erk_densities_follow_sum_over_product_of_dims():
  result = layer_sparsities(SHAPES, 0.5, "erk")
  densities = {n: 1 - s for n, s in result.items()}
  raw = {n: sum(s) / np.prod(s) for n, s in SHAPES.items()}
  ratios = [densities[n] / raw[n] for n in SHAPES if densities[n] < 1]
  np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)  # one common ε


def test_er_uses_only_fan_in_and_fan_out():
  result = layer_sparsities(SHAPES, 0.7, "er")
  densities = {n: 1 - s for n, s in result.items()}
  raw = {n: (s[-2] + s[-1]) / (s[-2] * s[-1]) for n, s in SHAPES.items()}
  ratios = [densities[n] / raw[n] for n in SHAPES if densities[n] < 1]
  np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)


def test_erk_power_scale_below_one_is_closer_to_uniform():
  sharp = layer_sparsities(SHAPES, 0.9, "erk", erk_power_scale=1.0)
  soft = layer_sparsities(SHAPES, 0.9, "erk", erk_power_scale=0.5)
  assert np.std(list(soft.values())) < np.std(list(sharp.values()))
  zeros, total = _global_sparsity(SHAPES, soft)
  assert abs(zeros - 0.9 * total) <= len(SHAPES)


def test_too_dense_layers_become_dense_and_budget_is_resolved():
  # The stem conv (tiny, many dims relative to size) would need density > 1 at 50% ERK.
  shapes = {"stem": (3, 3, 1, 2), "big": (512, 512), "head": (512, 10)}
  result = layer_sparsities(shapes, 0.5, "erk")
  assert result["stem"] == 0.0 and result["head"] == 0.0
  assert 0 < result["big"] < 1
  zeros, total = _global_sparsity(shapes, result)
  assert abs(zeros - 0.5 * total) <= len(shapes)


def test_uniform_keeps_first_layer_dense_by_default_and_others_exact():
  result = layer_sparsities(SHAPES, 0.9, "uniform")
  assert result["conv1"] == 0.0
  assert all(result[n] == 0.9 for n in ["conv2", "conv3", "fc"])
  assert layer_sparsities(SHAPES, 0.9, "erk")["conv1"] > 0  # ERK covers every layer by default


def test_custom_sparsities_override_and_leave_the_budget():
  result = layer_sparsities(SHAPES, 0.9, "erk", custom_sparsities={"fc": 0.0, "conv3": 0.5})
  assert result["fc"] == 0.0 and result["conv3"] == 0.5
  rest = {n: SHAPES[n] for n in ["conv1", "conv2"]}
  zeros, total = _global_sparsity(rest, result)
  assert abs(zeros - 0.9 * total) <= len(rest)


def test_unknown_custom_layer_name_is_an_error():
  with pytest.raises(ValueError, match="unknown layer.*nope"):
    layer_sparsities(SHAPES, 0.9, "erk", custom_sparsities={"nope": 0.5})


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_outside_unit_interval_is_an_error(bad):
  with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
    layer_sparsities(SHAPES, bad, "erk")


def test_unknown_distribution_is_an_error():
  with pytest.raises(ValueError, match="Unknown distribution 'gaussian'.*uniform, er, erk"):
    layer_sparsities(SHAPES, 0.9, "gaussian")


def test_nonzeros_is_size_minus_floor_of_zeros():
  assert nonzeros(10, 0.35) == 7   # floor(3.5) = 3 zeros
  assert nonzeros(100, 0.9) == 10
