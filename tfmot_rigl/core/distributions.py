"""Layer-wise sparsity distributions: uniform, Erdős–Rényi (ER) and Erdős–Rényi–Kernel (ERK).

Pure Python/NumPy: works from kernel shapes alone, before any model exists. Semantics follow the RigL paper and
its reference code (see REFERENCE.md, "Layer-wise sparsity distributions").
"""
from typing import Mapping, Optional, Sequence

import numpy as np

DISTRIBUTIONS = ("uniform", "er", "erk")


def check_sparsity(value, what="sparsity"):
  """Raises ValueError unless 0 <= value < 1 (a fully sparse layer cannot be trained)."""
  if not isinstance(value, (int, float, np.floating, np.integer)) or not 0.0 <= float(value) < 1.0:
    raise ValueError(f"{what}={value!r} is outside [0, 1); pass a fraction of zeros such as 0.9.")
  return float(value)


def _raw_density(shape: Sequence[int], distribution: str, erk_power_scale: float) -> float:
  """Unnormalised density ρ_l of one layer, before ε scaling."""
  if distribution == "erk":
    # ERK uses every kernel dimension: (sum of dims) / (product of dims), softened by the power scale.
    return (np.sum(shape) / np.prod(shape)) ** erk_power_scale
  # ER only looks at fan-in and fan-out, the kernel's last two dims.
  n_in, n_out = shape[-2], shape[-1]
  return (n_in + n_out) / (n_in * n_out)


def layer_sparsities(shapes: Mapping[str, Sequence[int]],
                     sparsity: float,
                     distribution: str = "erk",
                     erk_power_scale: float = 1.0,
                     custom_sparsities: Optional[Mapping[str, float]] = None,
                     first_layer_dense: Optional[bool] = None) -> dict:
  """Per-layer sparsities whose parameter-weighted mean is the global target.

  Args:
    shapes: ordered mapping layer name -> kernel shape, for the layers to sparsify (first entry = first layer).
    sparsity: global target fraction of zeros over the layers not fixed by `custom_sparsities`.
    distribution: "uniform", "er" or "erk".
    erk_power_scale: exponent on ERK's raw densities; < 1 makes the distribution closer to uniform.
    custom_sparsities: layer name -> sparsity; these layers are left out of the distribution's budget.
    first_layer_dense: keep the first layer dense. None means the reference's default: dense for uniform only.

  Returns:
    dict layer name -> sparsity, in the order of `shapes`.
  """
  sparsity = check_sparsity(sparsity)
  if distribution not in DISTRIBUTIONS:
    raise ValueError(f"Unknown distribution {distribution!r}; use one of {', '.join(DISTRIBUTIONS)}.")
  if not shapes:
    raise ValueError("No sparsifiable layers were given; a sparsity distribution needs at least one layer.")
  for name, shape in shapes.items():
    dims = list(shape) if isinstance(shape, (list, tuple)) or hasattr(shape, "__len__") else None
    if (not dims or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0 for d in dims)
        or (distribution == "er" and len(dims) < 2)):
      raise ValueError(f"Layer {name!r} has kernel shape {shape!r}; give each layer its kernel shape as positive "
                       "integers (at least 2 dims for er), e.g. (784, 300).")
  custom = dict(custom_sparsities or {})
  unknown = sorted(set(custom) - set(shapes))
  if unknown:
    raise ValueError(f"custom sparsity given for unknown layer(s) {unknown}; known layers are {list(shapes)}.")
  for name, value in custom.items():
    check_sparsity(value, f"custom sparsity of layer {name!r}")
  if first_layer_dense is None:
    first_layer_dense = distribution == "uniform"

  first = next(iter(shapes))
  result = {name: float(value) for name, value in custom.items()}
  if first_layer_dense and first not in result:
    result[first] = 0.0
  scaled = [name for name in shapes if name not in result]

  if distribution == "uniform":
    result.update({name: sparsity for name in scaled})
  else:
    # Solve ε·Σ ρ_l N_l = (1 − s)·Σ N_l − Σ_{dense} N_l; a layer whose ε·ρ_l exceeds 1 becomes dense and moves to
    # the fixed side, then ε is solved again until every density is valid.
    sizes = {name: float(np.prod(shapes[name])) for name in scaled}
    raw = {name: _raw_density(shapes[name], distribution, erk_power_scale) for name in scaled}
    total = sum(sizes.values())
    dense = set()
    while True:
      free = [name for name in scaled if name not in dense]
      budget = (1.0 - sparsity) * total - sum(sizes[name] for name in dense)
      divisor = sum(raw[name] * sizes[name] for name in free)
      epsilon = budget / divisor if divisor else 0.0
      too_dense = [name for name in free if epsilon * raw[name] > 1.0]
      if not too_dense:
        break
      dense.update(too_dense)
    for name in scaled:
      result[name] = 0.0 if name in dense else float(1.0 - epsilon * raw[name])
  return {name: result[name] for name in shapes}


def nonzeros(size: int, sparsity: float) -> int:
  """Active connections of a layer with `size` weights at `sparsity`: exactly floor(s·N) zeros."""
  return int(size) - int(np.floor(sparsity * size))
