"""The paper's accounting: inference FLOPs, model size and training FLOPs of a (sparse) network.

Pure Python/NumPy: it works on `LayerDescriptor`s, which `tfmot_rigl.keras.accounting.describe_model` reads off a
tf_keras model, or which can be written by hand.

Inference FLOPs are counted the way the NeurIPS 2019 MicroNet Challenge counting code counts them
(google-research/google-research, `micronet_challenge/counting.py`, `count_ops`; the RigL reference code uses it
for the paper's tables). Multiplies and additions are counted separately and summed:
  * conv / depthwise conv / dense: every output element is a dot product of length L = (kernel entries per output)
    × density, costing L multiplies and L − 1 additions. Summed over outputs: nnz · P multiplies and
    nnz · P − outputs additions, P being the number of output positions (H·W for a 2D conv, 1 for a flat Dense).
    Like counting.py, sparsity uses the layer's average density, not the per-column nonzero counts.
  * bias: one addition per output element. Batch norm right after a conv/dense without a non-linear activation in
    between is folded into it, i.e. it costs exactly a bias (the MicroNet EfficientNet notebook: "batchnorm scales
    are not counted since they can be merged. Bias added for each batch norm applied on a layer's output").
    A batch norm that cannot be folded costs what counting.py's `Scale` and `Add` ops cost: one multiply and one
    addition per element.
  * activations, per element (counting.py `get_flops_per_activation`): relu 1 multiply; swish 3 multiplies + 1 add;
    sigmoid 2 multiplies + 1 add. Beyond counting.py: relu6 costs what relu costs (the reference `get_stats` counts
    MobileNet's ReLU6 layers as 'relu'), and a final softmax is not counted (counting.py's reference models end at
    the logits). Any other activation is an error rather than a guess.
  * global average pooling: (positions − 1) additions and one division (a multiply) per channel. Add: one addition
    per element and extra input; Multiply (counting.py `Scale`): one multiply per element and extra input.
  * Not in counting.py, counted the same way: local average pooling ((window − 1) adds + 1 multiply per output),
    max pooling ((window − 1) comparisons, counted as additions, per output).

Model size (bits), as counting.py's `get_sparse_size`: a dense tensor costs 32 bits per entry; a sparse one (any
zero in its mask) nnz · 32 bits plus a 1-bit-per-entry bitmask. Biases (and folded batch norm) cost 32 bits per
output channel, an unfolded batch norm 2 × 32 bits per channel (its inference scale and shift).

Training FLOPs per example (REFERENCE.md "Accounting"; backward = 2 × forward; f_S / f_D = sparse / dense
inference FLOPs): dense 3·f_D; static, SET and SNIP 3·f_S (SNIP adds one dense forward-backward pass over one batch
for its one-shot scores); SNFS 2·f_S + f_D; RigL (3·f_S·ΔT + 2·f_S + f_D) / (ΔT + 1); gradual magnitude pruning
3·f_D · (mean density over TFMOT's PolynomialDecay schedule). Multiplied by the examples seen, steps × batch size.
"""
import dataclasses
import math
from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

KERNEL_KINDS = ("conv", "depthwise", "dense")
OTHER_KINDS = ("batch_norm", "activation", "global_avg_pool", "global_max_pool", "avg_pool", "max_pool", "add",
               "multiply", "average")
KINDS = KERNEL_KINDS + OTHER_KINDS
METHODS = ("dense", "static", "set", "snip", "snfs", "rigl", "magnitude")

# (multiplies, additions) per element. relu/swish/sigmoid are counting.py's own numbers; see the module docstring
# for relu6, silu (another name of swish) and softmax.
ACTIVATION_OPS = {
    None: (0, 0),
    "linear": (0, 0),
    "relu": (1, 0),
    "relu6": (1, 0),
    "swish": (3, 1),
    "silu": (3, 1),
    "sigmoid": (2, 1),
    "softmax": (0, 0),
}


@dataclasses.dataclass(frozen=True)
class LayerDescriptor:
  """One counted operation of a network, for one example.

  Attributes:
    name: layer name (used in reports and to match per-layer sparsities).
    kind: one of KINDS. conv, depthwise and dense carry a kernel.
    output_shape: the output of one example, channels last: (*spatial, channels); (units,) for a flat Dense.
    kernel_shape: Keras kernel layout: (*window, c_in, c_out) for conv, (*window, c_in, depth_multiplier) for
      depthwise, (c_in, c_out) for dense. Empty for the other kinds.
    nnz: nonzero (unmasked) kernel entries of a sparsified kernel; None for a kernel that is never sparsified.
    use_bias: the layer adds a bias.
    folded_batch_norm: a batch norm right after this layer is folded into it (costs a bias).
    activation: activation applied to every output element (kernel kinds and `activation`); a key of
      ACTIVATION_OPS.
    input_shape: one example's input, channels last (global pooling needs its positions).
    pool_size: pooling window (avg_pool, max_pool).
    num_inputs: number of tensors merged (add, multiply, average).
    counts_weights: False for a repeated call of a shared layer, whose weights are already counted.
  """
  name: str
  kind: str
  output_shape: Tuple[int, ...]
  kernel_shape: Tuple[int, ...] = ()
  nnz: Optional[int] = None
  use_bias: bool = False
  folded_batch_norm: bool = False
  activation: Optional[str] = None
  input_shape: Tuple[int, ...] = ()
  pool_size: Tuple[int, ...] = ()
  num_inputs: int = 2
  counts_weights: bool = True

  def __post_init__(self):
    object.__setattr__(self, "output_shape", tuple(int(d) for d in self.output_shape))
    object.__setattr__(self, "kernel_shape", tuple(int(d) for d in self.kernel_shape))
    object.__setattr__(self, "input_shape", tuple(int(d) for d in self.input_shape))
    object.__setattr__(self, "pool_size", tuple(int(d) for d in self.pool_size))
    where = f"Layer {self.name!r} ({self.kind})"
    if self.kind not in KINDS:
      raise ValueError(f"{where}: unknown kind; use one of {', '.join(KINDS)}.")
    if not self.output_shape:
      raise ValueError(f"{where}: output_shape is empty; give one example's output shape, channels last.")
    if self.activation not in ACTIVATION_OPS:
      raise ValueError(f"{where}: activation {self.activation!r} has no MicroNet count; supported: "
                       f"{', '.join(str(a) for a in ACTIVATION_OPS)}.")
    if self.kind in KERNEL_KINDS:
      if len(self.kernel_shape) < 2:
        raise ValueError(f"{where}: kernel_shape {self.kernel_shape} needs at least (c_in, c_out).")
      expected = self.kernel_shape[-1] * (self.kernel_shape[-2] if self.kind == "depthwise" else 1)
      if self.output_shape[-1] != expected:
        raise ValueError(f"{where}: output has {self.output_shape[-1]} channels but kernel {self.kernel_shape} "
                         f"makes {expected}; give output_shape channels last.")
      if self.nnz is not None and not 0 <= self.nnz <= self.kernel_size:
        raise ValueError(f"{where}: nnz={self.nnz} is outside [0, {self.kernel_size}] (the kernel's size).")
    elif self.nnz is not None or self.kernel_shape:
      raise ValueError(f"{where}: only conv, depthwise and dense layers have a kernel (kernel_shape / nnz).")
    if self.kind in ("global_avg_pool", "global_max_pool") and not self.input_shape:
      raise ValueError(f"{where}: global pooling needs input_shape (one example, channels last).")
    if self.kind in ("avg_pool", "max_pool") and not self.pool_size:
      raise ValueError(f"{where}: pooling needs pool_size (the window).")

  @property
  def kernel_size(self) -> int:
    """Number of kernel entries (0 for kinds without a kernel)."""
    return math.prod(self.kernel_shape) if self.kernel_shape else 0

  @property
  def kernel_nnz(self) -> int:
    """Nonzero kernel entries: all of them when never sparsified."""
    return self.kernel_size if self.nnz is None else self.nnz

  @property
  def sparsity(self) -> float:
    """Fraction of zeros in the kernel (0.0 for dense kernels and kernel-less kinds)."""
    return 1.0 - self.kernel_nnz / self.kernel_size if self.kernel_size else 0.0

  @property
  def channels(self) -> int:
    return self.output_shape[-1]

  @property
  def output_elements(self) -> int:
    return math.prod(self.output_shape)

  def dense(self) -> "LayerDescriptor":
    """The same layer with a dense kernel (the dense baseline of a report)."""
    return dataclasses.replace(self, nnz=None)


@dataclasses.dataclass(frozen=True)
class OpCount:
  """Multiplies and additions of one example's forward pass; `flops` is their sum, as in counting.py."""
  multiplies: int = 0
  additions: int = 0

  @property
  def flops(self) -> int:
    return self.multiplies + self.additions

  def __add__(self, other: "OpCount") -> "OpCount":
    return OpCount(self.multiplies + other.multiplies, self.additions + other.additions)


def layer_flops(layer: LayerDescriptor) -> OpCount:
  """Multiplies and additions of one layer for one example (see the module docstring for the rules)."""
  elements = layer.output_elements
  mul_per_act, add_per_act = ACTIVATION_OPS[layer.activation]
  if layer.kind in KERNEL_KINDS:
    positions = elements // layer.channels
    multiplies = layer.kernel_nnz * positions
    # L - 1 additions per dot product; counting.py would go negative when a layer keeps fewer than one weight per
    # output on average, which no real count can be: stop at zero.
    additions = max(multiplies - elements, 0)
    if layer.use_bias or layer.folded_batch_norm:
      additions += elements
    return OpCount(multiplies + mul_per_act * elements, additions + add_per_act * elements)
  if layer.kind == "activation":
    return OpCount(mul_per_act * elements, add_per_act * elements)
  if layer.kind == "batch_norm":
    return OpCount(elements, elements)
  if layer.kind in ("global_avg_pool", "global_max_pool"):
    positions = math.prod(layer.input_shape[:-1])
    comparisons_or_adds = (positions - 1) * layer.channels
    divisions = layer.channels if layer.kind == "global_avg_pool" else 0
    return OpCount(divisions, comparisons_or_adds)
  if layer.kind in ("avg_pool", "max_pool"):
    window = math.prod(layer.pool_size)
    divisions = elements if layer.kind == "avg_pool" else 0
    return OpCount(divisions, (window - 1) * elements)
  extra_inputs = (layer.num_inputs - 1) * elements
  if layer.kind == "add":
    return OpCount(0, extra_inputs)
  if layer.kind == "multiply":
    return OpCount(extra_inputs, 0)
  return OpCount(elements, extra_inputs)  # average: the sum, then one division per element


def inference_flops(layers: Sequence[LayerDescriptor]) -> Tuple[list, OpCount]:
  """([OpCount per layer], total OpCount) of one example's forward pass."""
  per_layer = [layer_flops(layer) for layer in layers]
  return per_layer, sum(per_layer, OpCount())


def layer_size_bits(layer: LayerDescriptor, param_bits: int = 32) -> int:
  """Bits to store the layer's parameters for inference (see the module docstring)."""
  if not layer.counts_weights:
    return 0
  bits = 0
  if layer.kind in KERNEL_KINDS:
    if layer.kernel_nnz < layer.kernel_size:
      bits += layer.kernel_nnz * param_bits + layer.kernel_size  # values of the nonzeros + a 1-bit mask
    else:
      bits += layer.kernel_size * param_bits
    if layer.use_bias or layer.folded_batch_norm:
      bits += layer.channels * param_bits
  elif layer.kind == "batch_norm":
    bits += 2 * layer.channels * param_bits
  return bits


def model_size_bits(layers: Sequence[LayerDescriptor], param_bits: int = 32) -> Tuple[list, int]:
  """([bits per layer], total bits) to store the network for inference."""
  per_layer = [layer_size_bits(layer, param_bits) for layer in layers]
  return per_layer, sum(per_layer)


def _resolve_step(value, steps: int, what: str) -> int:
  """An int is a step; a float in [0, 1] is a fraction of `steps` (the convention of the algorithms' windows)."""
  if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
    raise ValueError(f"{what}={value!r} must be a step number or a fraction of the training steps.")
  if isinstance(value, (float, np.floating)) and not (value > 1.0 and float(value).is_integer()):
    if not 0.0 <= value <= 1.0:
      raise ValueError(f"{what}={value!r}: a float is a fraction of the training steps and must be in [0, 1].")
    return int(round(value * steps))
  if value < 0:
    raise ValueError(f"{what}={value!r} is negative; steps count from 0.")
  return int(value)


def magnitude_mean_density(steps: int, final_sparsity: float, begin_step=0, end_step=0.75, frequency: int = 100,
                           power: int = 3, initial_sparsity: float = 0.0) -> float:
  """Mean density over `steps` training steps of gradual magnitude pruning with TFMOT's PolynomialDecay.

  TFMOT prunes at steps begin + k·frequency ≤ end, each time to
  s(t) = final + (initial − final) · (1 − (t − begin)/(end − begin))^power; the mask of a pruning step holds until
  the next one. So the network is dense before `begin_step`, and after the last pruning step it stays at that step's
  sparsity (the final one when end − begin is a multiple of `frequency`). `begin_step` / `end_step` may be fractions
  of `steps`, as in the algorithms' windows.
  """
  if not isinstance(steps, (int, np.integer)) or steps <= 0:
    raise ValueError(f"steps={steps!r} must be a positive number of training steps.")
  if not 0.0 <= final_sparsity < 1.0 or not 0.0 <= initial_sparsity < 1.0:
    raise ValueError(f"Sparsities must be in [0, 1); got initial {initial_sparsity!r}, final {final_sparsity!r}.")
  if not isinstance(frequency, (int, np.integer)) or frequency <= 0:
    raise ValueError(f"frequency={frequency!r} must be a positive number of steps, e.g. 100.")
  begin = _resolve_step(begin_step, steps, "begin_step")
  end = _resolve_step(end_step, steps, "end_step")
  if end < begin:
    raise ValueError(f"end_step={end} is before begin_step={begin}; choose end_step >= begin_step.")
  prune_steps = np.arange(begin, min(end, steps - 1) + 1, frequency, dtype=np.int64)
  if prune_steps.size == 0:
    return 1.0  # pruning would start after the last step: dense throughout
  if end > begin:
    progress = np.clip((prune_steps - begin) / (end - begin), 0.0, 1.0)
  else:
    progress = np.ones(prune_steps.shape)  # a one-step window prunes straight to the target
  sparsities = final_sparsity + (initial_sparsity - final_sparsity) * (1.0 - progress) ** power
  held_for = np.diff(np.append(prune_steps, steps))  # steps each mask stays in use
  dense_steps = prune_steps[0]
  return float((dense_steps + np.sum((1.0 - sparsities) * held_for)) / steps)


def training_flops_per_example(method: str, f_sparse: float, f_dense: float, update_frequency: int = 100,
                               mean_density: float = 1.0) -> float:
  """Average training FLOPs of one example in one step (forward + backward), REFERENCE.md "Accounting".

  Args:
    method: one of METHODS.
    f_sparse: inference FLOPs of the sparse network (f_S).
    f_dense: inference FLOPs of the dense network (f_D).
    update_frequency: RigL's ΔT (its dense gradient is needed once every ΔT steps).
    mean_density: magnitude pruning only: mean density over training (`magnitude_mean_density`).
  """
  if method not in METHODS:
    raise ValueError(f"Unknown method {method!r}; use one of {', '.join(METHODS)}.")
  if method == "dense":
    return 3.0 * f_dense
  if method in ("static", "set", "snip"):
    return 3.0 * f_sparse
  if method == "snfs":
    # SNFS needs the dense gradient at every step for its momentum: a sparse forward and backward-to-inputs plus
    # a dense weight gradient.
    return 2.0 * f_sparse + f_dense
  if method == "rigl":
    if not isinstance(update_frequency, (int, np.integer)) or update_frequency <= 0:
      raise ValueError(f"update_frequency={update_frequency!r} must be a positive number of steps, e.g. 100.")
    return (3.0 * f_sparse * update_frequency + 2.0 * f_sparse + f_dense) / (update_frequency + 1)
  return 3.0 * f_dense * mean_density  # magnitude


def training_flops(method: str, f_sparse: float, f_dense: float, steps: int, batch_size: int,
                   update_frequency: int = 100, begin_step=0, end_step=0.75, final_sparsity: Optional[float] = None,
                   power: int = 3) -> dict:
  """Training FLOPs of a whole run: per-example cost × examples seen (steps × batch size).

  Pass the steps actually trained: extended training (e.g. 5×) is 5× the steps. For magnitude pruning,
  `update_frequency`, `begin_step`, `end_step` and `power` describe TFMOT's PolynomialDecay schedule (pruning
  frequency, window, exponent) and `final_sparsity` its target; the other methods ignore them. SNIP adds its one-shot
  scoring: one dense forward and backward pass (3·f_D) over one batch.

  Returns:
    {'method', 'steps', 'batch_size', 'examples', 'flops_per_example', 'flops', 'dense_flops', 'ratio'} and, for
    magnitude pruning, 'mean_density'. `dense_flops` is dense training on the same examples; `ratio` = flops /
    dense_flops.
  """
  for value, what in ((steps, "steps"), (batch_size, "batch_size")):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
      raise ValueError(f"{what}={value!r} must be a positive integer.")
  result = {"method": method, "steps": int(steps), "batch_size": int(batch_size)}
  mean_density = 1.0
  if method == "magnitude":
    if final_sparsity is None:
      raise ValueError("Magnitude pruning needs final_sparsity (its target) to compute the mean density.")
    mean_density = magnitude_mean_density(steps, final_sparsity, begin_step, end_step, update_frequency, power)
    result["mean_density"] = mean_density
  per_example = training_flops_per_example(method, f_sparse, f_dense, update_frequency, mean_density)
  examples = int(steps) * int(batch_size)
  total = per_example * examples
  if method == "snip":
    total += 3.0 * f_dense * batch_size
  dense_total = 3.0 * f_dense * examples
  result.update(examples=examples, flops_per_example=float(per_example), flops=float(total),
                dense_flops=float(dense_total), ratio=float(total / dense_total) if dense_total else float("nan"))
  return result


def _ratio(value, reference):
  return float(value / reference) if reference else float("nan")


def build_report(layers: Sequence[LayerDescriptor], method: Optional[str] = None, steps: Optional[int] = None,
                 batch_size: Optional[int] = None, param_bits: int = 32, **training_options) -> dict:
  """Everything the paper's tables report, as a plain (JSON-ready) dict.

  Args:
    layers: the network's descriptors, with the sparse kernels' nnz.
    method: training method (one of METHODS); with `steps` and `batch_size` adds the 'training' section.
    steps: training steps actually run.
    batch_size: examples per step (global batch).
    param_bits: bits per stored parameter (32 in the paper).
    **training_options: passed to `training_flops` (update_frequency, begin_step, end_step, power, final_sparsity).
      For magnitude pruning `final_sparsity` defaults to the sparsity of the sparsified kernels in `layers`.

  Returns:
    {'layers': [row per layer], 'inference': {...}, 'model_size': {...}, 'sparsity': {...}, 'training': {...}}
    with every ratio relative to the same network with dense kernels.
  """
  layers = list(layers)
  dense_layers = [layer.dense() for layer in layers]
  flops, total = inference_flops(layers)
  dense_flops, dense_total = inference_flops(dense_layers)
  bits, total_bits = model_size_bits(layers, param_bits)
  dense_bits, dense_total_bits = model_size_bits(dense_layers, param_bits)
  rows = []
  for layer, count, dense_count, size, dense_size in zip(layers, flops, dense_flops, bits, dense_bits):
    rows.append({
        "name": layer.name, "kind": layer.kind, "kernel_shape": list(layer.kernel_shape),
        "output_shape": list(layer.output_shape), "kernel_size": layer.kernel_size, "nnz": layer.kernel_nnz,
        "sparsity": layer.sparsity, "sparsified": layer.nnz is not None, "multiplies": count.multiplies,
        "additions": count.additions, "flops": count.flops, "dense_flops": dense_count.flops, "size_bits": size,
        "dense_size_bits": dense_size})
  sparsified = [layer for layer in layers if layer.nnz is not None and layer.counts_weights]
  sparsified_size = sum(layer.kernel_size for layer in sparsified)
  sparsified_nnz = sum(layer.kernel_nnz for layer in sparsified)
  kernels = [layer for layer in layers if layer.kind in KERNEL_KINDS and layer.counts_weights]
  kernel_size = sum(layer.kernel_size for layer in kernels)
  kernel_nnz = sum(layer.kernel_nnz for layer in kernels)
  report = {
      "layers": rows,
      "inference": {"multiplies": total.multiplies, "additions": total.additions, "flops": total.flops,
                    "dense_flops": dense_total.flops, "ratio": _ratio(total.flops, dense_total.flops)},
      "model_size": {"bits": total_bits, "bytes": total_bits / 8, "dense_bits": dense_total_bits,
                     "dense_bytes": dense_total_bits / 8, "ratio": _ratio(total_bits, dense_total_bits),
                     "param_bits": param_bits},
      "sparsity": {"sparsified_params": sparsified_size, "sparsified_nnz": sparsified_nnz,
                   "sparsified_sparsity": 1.0 - _ratio(sparsified_nnz, sparsified_size) if sparsified_size else 0.0,
                   "kernel_params": kernel_size, "kernel_nnz": kernel_nnz,
                   "kernel_sparsity": 1.0 - _ratio(kernel_nnz, kernel_size) if kernel_size else 0.0},
  }
  if method is not None or steps is not None or batch_size is not None:
    if method is None or steps is None or batch_size is None:
      raise ValueError("Training FLOPs need all of method, steps and batch_size; pass the three or none of them.")
    if method == "magnitude" and training_options.get("final_sparsity") is None:
      training_options["final_sparsity"] = report["sparsity"]["sparsified_sparsity"]
    report["training"] = training_flops(method, total.flops, dense_total.flops, steps, batch_size,
                                        **training_options)
  return report


def _number(value) -> str:
  return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


def render_markdown(report: Mapping) -> str:
  """The report as Markdown: a summary table (values and ratios to dense) and a per-layer table."""
  inference, size = report["inference"], report["model_size"]
  lines = ["| Quantity | Value | Dense | Ratio |", "|---|---:|---:|---:|",
           f"| Inference FLOPs (per example) | {inference['flops']:.4g} | {inference['dense_flops']:.4g} | "
           f"{inference['ratio']:.3f}x |",
           f"| Model size (bytes) | {size['bytes']:,.0f} | {size['dense_bytes']:,.0f} | {size['ratio']:.3f}x |"]
  training = report.get("training")
  if training:
    lines.append(f"| Training FLOPs ({training['method']}, {training['steps']:,} steps × {training['batch_size']:,}) "
                 f"| {training['flops']:.4g} | {training['dense_flops']:.4g} | {training['ratio']:.3f}x |")
  sparsity = report["sparsity"]
  lines += ["", f"Sparsity of the sparsified kernels: {sparsity['sparsified_sparsity']:.4f} "
            f"({sparsity['sparsified_nnz']:,} of {sparsity['sparsified_params']:,} weights kept); of all kernels: "
            f"{sparsity['kernel_sparsity']:.4f}.", "",
            "| Layer | Kind | Kernel | Output | Sparsity | Multiplies | Additions | FLOPs | Size (bits) |",
            "|---|---|---|---|---:|---:|---:|---:|---:|"]
  for row in report["layers"]:
    kernel = "×".join(str(d) for d in row["kernel_shape"]) or "–"
    output = "×".join(str(d) for d in row["output_shape"])
    lines.append(f"| {row['name']} | {row['kind']} | {kernel} | {output} | {row['sparsity']:.4f} | "
                 f"{_number(row['multiplies'])} | {_number(row['additions'])} | {_number(row['flops'])} | "
                 f"{_number(row['size_bits'])} |")
  return "\n".join(lines) + "\n"
