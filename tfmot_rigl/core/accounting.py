"""The paper's accounting: inference FLOPs, model size and training FLOPs, from plain per-layer descriptions.

Inference FLOPs are counted the way the NeurIPS 2019 MicroNet Challenge counting code counts them
(google-research/google-research, micronet_challenge/counting.py, `count_ops`), which is also what the RigL
reference code uses for the paper's tables (google-research/rigl, rigl/sparse_utils.py, `get_stats`):

- A conv / depthwise conv / dense output element is one dot product of length L = fan-in · density: L multiplies
  and L − 1 additions. Summed over a layer this is nnz · positions multiplies and nnz · positions − outputs adds,
  where positions is the number of spatial positions the kernel is applied at and outputs = positions · channels.
  Like counting.py, sparsity enters through the layer's mean density, not per-output nonzero counts.
- A bias adds one addition per output element. Batch norm right after a conv/dense is folded into it: its scale
  merges into the kernel (free) and its shift becomes the bias ("batchnorm scales are not counted since they can be
  merged. Bias added for each batch norm applied on a layer's output", micronet_challenge/EfficientNetCounting).
  A batch norm that cannot be folded costs counting.py's Scale plus Add: one multiply and one add per element.
- Activations cost per output element (counting.py `get_flops_per_activation`): ReLU 1 multiply (a comparison,
  tracked as a multiply), swish 3 multiplies + 1 add, sigmoid 2 multiplies + 1 add. ReLU6 is counted as ReLU, as the
  reference's MobileNet counting does; a final softmax is not counted (the challenge counts up to the logits). Any
  other activation is an error rather than a guess.
- Global average pooling: (positions − 1) adds and 1 multiply (the division) per channel. Add: one addition per
  element per extra operand; Multiply (counting.py's Scale): one multiply per element per extra operand.
- Not in counting.py, counted by analogy: an average-pool output costs (window − 1) adds + 1 multiply, a max-pool
  output (window − 1) comparisons, tracked as multiplies like ReLU's; global max pooling likewise.

Model size (counting.py `get_sparse_size`): a dense tensor costs 32 bits per entry; a sparse kernel (density < 1)
nnz · 32 bits plus a 1-bit-per-entry bitmask. Biases (and folded batch norms) cost 32 bits per output channel, an
unfolded batch norm 2 × 32 bits per channel (its inference scale and shift).

Training FLOPs (the paper's per-method formulas, and the step-by-step sum of gradual pruning) are counted in
core/training_flops.py; `build_report` puts them beside the inference counts.
"""
import dataclasses
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from tfmot_rigl.core import training_flops as _training
# Training FLOPs live in core/training_flops.py; these names stay importable from here.
from tfmot_rigl.core.training_flops import (TRAINING_METHODS, GradualPlan, magnitude_mean_pruned_fraction,  # noqa: F401
                                            training_flops, training_flops_per_example)

PARAM_BITS = 32

WEIGHTED_KINDS = ("conv", "depthwise", "dense")
ELEMENTWISE_KINDS = ("batch_norm", "activation", "add", "multiply")
POOLING_KINDS = ("global_avg_pool", "global_max_pool", "avg_pool", "max_pool")
KINDS = WEIGHTED_KINDS + ELEMENTWISE_KINDS + POOLING_KINDS

# (multiplies, adds) per element; see the module docstring.
ACTIVATION_COSTS = {
    "linear": (0, 0),
    "relu": (1, 0),
    "relu6": (1, 0),
    "swish": (3, 1),
    "silu": (3, 1),
    "sigmoid": (2, 1),
    "softmax": (0, 0),
}


@dataclasses.dataclass(frozen=True)
class LayerOp:
  """One counted operation of a network, per example (shapes exclude the batch dimension).

  Attributes:
    name: layer name (a SeparableConv2D gives two ops, "<name>/depthwise" and "<name>/pointwise").
    kind: one of KINDS.
    output_shape: shape of the op's output; only its number of elements matters, so any data format works
      (except for batch_norm, whose last dim is read as its channels).
    kernel_shape: weighted kinds only. conv (..., c_in, c_out); depthwise (..., c_in, multiplier); dense (n_in, n_out).
    nonzeros: entries of the kernel kept by its mask; None means dense.
    has_bias: the layer adds a bias.
    folded_bn: a batch norm follows and is folded into this op (one bias add per output, even without has_bias).
    activation: name of the activation applied to the output (weighted and "activation" kinds), None for none.
    input_shape: pooling kinds only: shape of the pooled input.
    num_inputs: add / multiply only: number of operands.
    pool_size: avg_pool / max_pool only: number of elements in one window.
    reuses_weights: a repeated call of a layer already counted: its FLOPs count again, its parameters do not.
  """
  name: str
  kind: str
  output_shape: Tuple[int, ...]
  kernel_shape: Tuple[int, ...] = ()
  nonzeros: Optional[float] = None
  has_bias: bool = False
  folded_bn: bool = False
  activation: Optional[str] = None
  input_shape: Tuple[int, ...] = ()
  num_inputs: int = 2
  pool_size: int = 1
  reuses_weights: bool = False

  def __post_init__(self):
    where = f"Op {self.name!r} ({self.kind})"
    if self.kind not in KINDS:
      raise ValueError(f"{where}: unknown kind; use one of {', '.join(KINDS)}.")
    if self.kind in WEIGHTED_KINDS:
      if len(self.kernel_shape) < 2:
        raise ValueError(f"{where} needs its kernel_shape, e.g. (3, 3, c_in, c_out).")
      if self.output_elements % self.out_channels:
        raise ValueError(f"{where}: output_shape {tuple(self.output_shape)} does not hold a whole number of its "
                         f"{self.out_channels} output channels; pass one example's output shape, without the batch.")
      if self.nonzeros is not None and not 0 <= self.nonzeros <= self.kernel_size:
        raise ValueError(f"{where}: nonzeros={self.nonzeros} is outside [0, {self.kernel_size}].")
    if self.kind in POOLING_KINDS and not self.input_shape:
      raise ValueError(f"{where} needs its input_shape.")
    activation_cost(self.activation, self.name)

  @property
  def kernel_size(self) -> int:
    return int(np.prod(self.kernel_shape)) if self.kernel_shape else 0

  @property
  def out_channels(self) -> int:
    if self.kind == "depthwise":
      return int(self.kernel_shape[-2] * self.kernel_shape[-1])
    return int(self.kernel_shape[-1])

  @property
  def output_elements(self) -> int:
    return int(np.prod(self.output_shape))

  @property
  def density(self) -> float:
    return 1.0 if self.nonzeros is None else self.nonzeros / self.kernel_size

  @property
  def is_sparse(self) -> bool:
    return self.kind in WEIGHTED_KINDS and self.nonzeros is not None and self.nonzeros < self.kernel_size


@dataclasses.dataclass(frozen=True)
class OpCount:
  """One op's multiplies, adds and parameter storage in bits, as counting.py's `count_ops` returns them."""
  name: str
  mults: float
  adds: float
  param_bits: float
  params: int = 0            # stored entries if dense: kernel + bias / batch-norm parameters
  nonzero_params: float = 0  # of which nonzero

  @property
  def flops(self) -> float:
    return self.mults + self.adds


def activation_cost(activation: Optional[str], layer_name: str = "?") -> Tuple[int, int]:
  """(multiplies, adds) per element of an activation; a clear error for one the counting code has no cost for."""
  if activation is None:
    return 0, 0
  if activation not in ACTIVATION_COSTS:
    raise ValueError(f"Layer {layer_name!r}: activation {activation!r} has no MicroNet FLOP cost; supported are "
                     f"{', '.join(sorted(ACTIVATION_COSTS))}.")
  return ACTIVATION_COSTS[activation]


def _whole(value):
  """Keeps counts integral when they are (so reports show exact integers), floats otherwise."""
  return int(round(value)) if abs(value - round(value)) < 1e-6 else float(value)


def count_op(op: LayerOp, dense: bool = False, param_bits: int = PARAM_BITS) -> OpCount:
  """Counts one op; `dense=True` counts it as if its kernel had no mask (the dense baseline)."""
  if op.kind in WEIGHTED_KINDS:
    return _count_weighted(op, dense, param_bits)
  elements = op.output_elements
  mults = adds = params = 0
  if op.kind == "batch_norm":
    # Not foldable: y = γ'·x + β' per element, the moving statistics merged into γ' and β'.
    mults, adds, params = elements, elements, 2 * op.output_shape[-1]
  elif op.kind == "activation":
    per_mult, per_add = activation_cost(op.activation, op.name)
    mults, adds = per_mult * elements, per_add * elements
  elif op.kind == "add":
    adds = (op.num_inputs - 1) * elements
  elif op.kind == "multiply":
    mults = (op.num_inputs - 1) * elements
  elif op.kind in ("global_avg_pool", "global_max_pool"):
    channels = elements
    positions = int(np.prod(op.input_shape)) // channels
    if op.kind == "global_avg_pool":
      mults, adds = channels, (positions - 1) * channels
    else:
      mults = (positions - 1) * channels
  elif op.kind == "avg_pool":
    mults, adds = elements, (op.pool_size - 1) * elements
  elif op.kind == "max_pool":
    mults = (op.pool_size - 1) * elements
  if op.reuses_weights:
    params = 0
  return OpCount(op.name, mults, adds, params * param_bits, params, params)


def _count_weighted(op: LayerOp, dense: bool, param_bits: int) -> OpCount:
  kernel_size = op.kernel_size
  nonzeros = kernel_size if dense or op.nonzeros is None else op.nonzeros
  outputs = op.output_elements
  positions = outputs // op.out_channels
  # counting.py: each output is a dot product of length L = fan_in · density: L multiplies and L − 1 adds. (A layer
  # keeping under one weight per output would make the sum negative there; no real count is, so stop at zero.)
  mults = nonzeros * positions
  adds = max(nonzeros * positions - outputs, 0)
  if op.has_bias or op.folded_bn:
    adds += outputs
  per_mult, per_add = activation_cost(op.activation, op.name)
  mults += per_mult * outputs
  adds += per_add * outputs

  if op.reuses_weights:
    return OpCount(op.name, _whole(mults), _whole(adds), 0)
  if nonzeros < kernel_size:
    kernel_bits = nonzeros * param_bits + kernel_size  # values of the nonzeros + a 1-bit mask per entry
  else:
    kernel_bits = kernel_size * param_bits
  bias_params = op.out_channels if (op.has_bias or op.folded_bn) else 0
  return OpCount(op.name, _whole(mults), _whole(adds), _whole(kernel_bits + bias_params * param_bits),
                 kernel_size + bias_params, _whole(nonzeros + bias_params))


def inference_flops(ops: Iterable[LayerOp], dense: bool = False) -> Tuple[List[OpCount], float]:
  """(per-op counts, total FLOPs = multiplies + adds) of one forward pass of one example."""
  counts = [count_op(op, dense=dense) for op in ops]
  return counts, _whole(sum(c.flops for c in counts))


def model_size_bits(ops: Iterable[LayerOp], dense: bool = False, param_bits: int = PARAM_BITS) -> float:
  """Bits to store the parameters: dense tensors 32 bits/entry, sparse kernels nnz·32 + a 1-bit mask per entry."""
  return _whole(sum(count_op(op, dense=dense, param_bits=param_bits).param_bits for op in ops))


def sparse_kernel_nonzeros(kernel_size: int, sparsity: float) -> int:
  """Entries a mask of this sparsity keeps: N − floor(s·N), exactly what the project's initial masks keep."""
  return int(kernel_size - int(sparsity * kernel_size // 1))


# --- report ---------------------------------------------------------------------------------------------------------


def _ratio(numerator, denominator):
  return float(numerator) / float(denominator) if denominator else float("nan")


def build_report(ops: Sequence[LayerOp], *, method: Optional[str] = None, steps: Optional[int] = None,
                 batch_size: Optional[int] = None, multiplier: float = 1.0, update_frequency: int = 100,
                 begin_step=0, end_step=0.75, power: int = 3, uncounted: Sequence[str] = (),
                 gradual: Optional[GradualPlan] = None) -> dict:
  """Per-layer rows, totals and ratios to the dense network, as a plain (JSON-ready) dict.

  {'layers': [row per op], 'totals': {...}, 'uncounted': [...], 'training': {...}}. The training section is there
  when `method`, `steps` and `batch_size` are all given; its ratio is to dense training for `steps` (1×), as the
  paper's tables normalise extended runs. `uncounted` lists layers no counting rule covers. With `gradual` (a
  gradual-pruning plan of set/rigl/snfs) training FLOPs are summed step by step over the density schedule.
  """
  given = [value is not None for value in (method, steps, batch_size)]
  if any(given) and not all(given):
    raise ValueError("Training FLOPs need all of method, steps and batch_size; pass the three or none of them.")
  ops = list(ops)
  sparse_counts, f_sparse = inference_flops(ops)
  dense_counts, f_dense = inference_flops(ops, dense=True)
  rows = []
  for op, sparse, dense in zip(ops, sparse_counts, dense_counts):
    rows.append({
        "name": op.name, "kind": op.kind, "kernel_shape": list(op.kernel_shape), "output_shape": list(op.output_shape),
        "density": op.density if op.kind in WEIGHTED_KINDS else None,
        "params": sparse.params, "nonzero_params": sparse.nonzero_params,
        "mults": sparse.mults, "adds": sparse.adds, "flops": sparse.flops, "dense_flops": dense.flops,
        "size_bits": sparse.param_bits,
    })
  kernels = [op for op in ops if op.kind in WEIGHTED_KINDS and not op.reuses_weights]
  kernel_params = sum(op.kernel_size for op in kernels)
  kernel_nonzeros = _whole(sum(op.kernel_size * op.density for op in kernels))
  size_bits = model_size_bits(ops)
  dense_size_bits = model_size_bits(ops, dense=True)
  report = {
      "layers": rows,
      "totals": {
          "flops": f_sparse, "dense_flops": f_dense, "flops_ratio": _ratio(f_sparse, f_dense),
          "size_bits": size_bits, "size_bytes": size_bits / 8.0,
          "dense_size_bits": dense_size_bits, "dense_size_bytes": dense_size_bits / 8.0,
          "size_ratio": _ratio(size_bits, dense_size_bits),
          "kernel_params": kernel_params, "kernel_nonzeros": kernel_nonzeros,
          "kernel_sparsity": 1.0 - _ratio(kernel_nonzeros, kernel_params) if kernel_params else 0.0,
      },
      "uncounted": list(uncounted),
  }
  if all(given):
    knobs = dict(update_frequency=update_frequency, begin_step=begin_step, end_step=end_step, power=power)
    total_steps = int(round(steps * multiplier))
    if gradual is not None:
      phases = gradual_flops_phases(ops, gradual, total_steps)
      per_example = _training.stepwise_flops_per_step(method, phases, f_dense, total_steps,
                                                      gradual.update_steps(total_steps)) / total_steps
      total = per_example * total_steps * batch_size
    else:
      per_example = training_flops_per_example(method, f_sparse, f_dense, steps=total_steps, **knobs)
      total = training_flops(method, f_sparse, f_dense, steps, batch_size, multiplier=multiplier, **knobs)
    dense_total = training_flops("dense", f_dense, f_dense, steps, batch_size)
    report["training"] = {
        "method": method, "steps": total_steps, "batch_size": batch_size, "multiplier": multiplier,
        "flops_per_example": per_example, "total_flops": total, "dense_total_flops": dense_total,
        "flops_ratio": _ratio(total, dense_total),
    }
    if gradual is not None:
      report["training"]["gradual_phases"] = [[start, flops] for start, flops in phases]
  return report


def gradual_flops_phases(ops: Sequence[LayerOp], plan: GradualPlan, steps: int):
  """[(first step, forward FLOPs of one example)] of gradual pruning over a `steps`-step run."""
  ops = list(ops)

  def forward_flops(nonzeros):
    counted = list(ops)
    for index, count in nonzeros.items():
      op = counted[index]
      counted[index] = dataclasses.replace(op, nonzeros=None if count >= op.kernel_size else count)
    return inference_flops(counted)[1]

  return _training.gradual_phases(plan, steps, forward_flops)


def _fmt(value) -> str:
  if value is None:
    return ""
  if isinstance(value, float) and not value.is_integer():
    return f"{value:,.1f}"
  return f"{int(value):,}"


def render_markdown(report: dict, kernels_only: bool = False) -> str:
  """The report as markdown: a per-layer table, then totals with ratios to dense.

  With `kernels_only`, the layer table lists only conv/dense kernels (sparsity, nnz, FLOPs, size) — the view of
  `tfm report`; other ops still count in the totals and appear in the JSON report.
  """
  if kernels_only:
    lines = ["| layer | kernel | sparsity | nnz | FLOPs | dense FLOPs | size (bits) |",
             "|---|---|---:|---:|---:|---:|---:|"]
  else:
    lines = ["| layer | kind | kernel | output | density | params | nonzeros | FLOPs | dense FLOPs | size (bits) |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
  for row in report["layers"]:
    kernel = "×".join(str(d) for d in row["kernel_shape"])
    if kernels_only:
      if row["density"] is not None:
        lines.append(f"| {row['name']} | {kernel} | {1 - row['density']:.4f} | {_fmt(row['nonzero_params'])} | "
                     f"{_fmt(row['flops'])} | {_fmt(row['dense_flops'])} | {_fmt(row['size_bits'])} |")
      continue
    output = "×".join(str(d) for d in row["output_shape"])
    density = "" if row["density"] is None else f"{row['density']:.4f}"
    lines.append(f"| {row['name']} | {row['kind']} | {kernel} | {output} | {density} | {_fmt(row['params'])} | "
                 f"{_fmt(row['nonzero_params'])} | {_fmt(row['flops'])} | {_fmt(row['dense_flops'])} | "
                 f"{_fmt(row['size_bits'])} |")
  totals = report["totals"]
  lines += [
      "",
      "| total | value | dense | ratio to dense |",
      "|---|---:|---:|---:|",
      f"| inference FLOPs / example | {_fmt(totals['flops'])} | {_fmt(totals['dense_flops'])} | "
      f"{totals['flops_ratio']:.4f} |",
      f"| model size (bytes) | {_fmt(totals['size_bytes'])} | {_fmt(totals['dense_size_bytes'])} | "
      f"{totals['size_ratio']:.4f} |",
  ]
  training = report.get("training")
  if training:
    lines.append(f"| training FLOPs ({training['method']}, {training['steps']:,} steps × {training['batch_size']}) | "
                 f"{training['total_flops']:.4e} | {training['dense_total_flops']:.4e} | "
                 f"{training['flops_ratio']:.4f} |")
  lines += ["", f"Kernel sparsity {totals['kernel_sparsity']:.4f} ({_fmt(totals['kernel_nonzeros'])} of "
            f"{_fmt(totals['kernel_params'])} kernel weights nonzero). FLOPs are multiplies + adds as the MicroNet "
            "Challenge counting code counts them, batch norm folded where it follows a conv/dense; size: 32 bits per "
            "stored value plus a 1-bit mask per entry of a sparse kernel."]
  if training and training["multiplier"] != 1:
    lines.append(f"Training FLOPs are a ratio to dense training for {training['steps'] / training['multiplier']:,.0f} "
                 f"steps ({training['multiplier']:g}x extended training).")
  if report.get("uncounted"):
    lines.append(f"Not counted (no counting rule): {', '.join(report['uncounted'])}.")
  return "\n".join(lines) + "\n"
