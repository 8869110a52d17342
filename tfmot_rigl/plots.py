"""Pictures of a sparse training run, drawn from what `tfm train` leaves in its model_dir (matplotlib, Agg).

  sparsity.png          sparsity of every kernel over training (TensorBoard tags sparsity/<kernel>)
  mask_turnover.png     per mask update: the drop fraction f(t), the share of each kernel's connections that were
                        newly grown, and the fraction of the previous update's new connections dropped again
  masks_step_<N>.png    the masks of every recorded kernel after N steps (model_dir/masks/step_<N>.npz); a first
                        dense layer on image inputs is also drawn as the number of outgoing connections per input
                        pixel, as the RigL reference's MNIST mask visualiser does

Figures are built with `matplotlib.figure.Figure` rather than pyplot, so nothing here needs a display or touches
pyplot's global state.
"""
import glob
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from tensorboard.backend.event_processing import event_file_loader

from tfmot_rigl.keras import monitoring

Scalars = Dict[str, List[Tuple[int, float]]]


def read_scalars(log_dir: str) -> Scalars:
  """{tag: [(step, value)] sorted by step} from the TensorBoard event files directly in `log_dir`.

  When a step is written twice (a run resumed from a checkpoint repeats the steps after it), the later file wins.
  """
  by_tag: Dict[str, Dict[int, float]] = {}
  for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
    # TensorBoard's own reader; it also turns legacy simple_value summaries into tensors.
    for event in event_file_loader.EventFileLoader(path).Load():
      for value in event.summary.value:
        by_tag.setdefault(value.tag, {})[int(event.step)] = float(tf.make_ndarray(value.tensor))
  return {tag: sorted(points.items()) for tag, points in by_tag.items()}


def _series(scalars: Scalars, prefix: str) -> Dict[str, List[Tuple[int, float]]]:
  """{kernel: points} of the tags `prefix` + kernel name."""
  return {tag[len(prefix):]: points for tag, points in scalars.items() if tag.startswith(prefix)}


def _plot_lines(axes, series: Dict[str, List[Tuple[int, float]]], **kwargs):
  for name, points in series.items():
    steps, values = zip(*points)
    axes.plot(steps, values, label=name, **kwargs)


def _legend(axes, count: int):
  if count:
    axes.legend(fontsize="small", ncol=1 if count <= 8 else 2)


def plot_sparsity(scalars: Scalars, path: str) -> str:
  """Sparsity of every kernel (and over all of them) against the training step."""
  figure = Figure(figsize=(8, 5), layout="constrained")
  axes = figure.add_subplot()
  series = _series(scalars, monitoring.SPARSITY_TAG.format(""))
  _plot_lines(axes, series, marker=".")
  overall = scalars.get(monitoring.OVERALL_SPARSITY_TAG)
  if overall:
    _plot_lines(axes, {"all sparsified kernels": overall}, color="black", linestyle="--")
  axes.set(xlabel="training step", ylabel="sparsity (fraction of zeros)", ylim=(-0.02, 1.02),
           title="Sparsity per kernel")
  axes.grid(alpha=0.3)
  _legend(axes, len(series) + bool(overall))
  figure.savefig(path, dpi=100)
  return path


def plot_turnover(scalars: Scalars, path: str) -> str:
  """Drop fraction, share of new connections and grown-then-dropped fraction at every mask update."""
  figure = Figure(figsize=(8, 9), layout="constrained")
  top, middle, bottom = figure.subplots(3, 1, sharex=True)
  drop_fraction = scalars.get(monitoring.DROP_FRACTION_TAG)
  if drop_fraction:
    _plot_lines(top, {"f(t)": drop_fraction}, marker=".", color="black")
  top.set(ylabel="drop fraction f(t)", title="Mask turnover per update")
  grown = _series(scalars, monitoring.GROWN_FRACTION_TAG.format(""))
  _plot_lines(middle, grown, marker=".")
  middle.set(ylabel="grown / active connections")
  _legend(middle, len(grown))
  regrown = _series(scalars, monitoring.GROWN_THEN_DROPPED_TAG.format(""))
  _plot_lines(bottom, regrown, marker=".")
  bottom.set(xlabel="update step", ylabel="previous update's new\nconnections dropped again", ylim=(-0.02, 1.02))
  _legend(bottom, len(regrown))
  for axes in (top, middle, bottom):
    axes.grid(alpha=0.3)
  figure.savefig(path, dpi=100)
  return path


def _as_matrix(mask: np.ndarray) -> np.ndarray:
  """A kernel's mask as (fan-in positions, outputs): a dense (n_in, n_out), a conv (kh·kw·c_in, c_out)."""
  if mask.ndim <= 1:
    return mask.reshape(1, -1)
  return mask.reshape(-1, mask.shape[-1])


def _pixel_fan_out(mask: np.ndarray, input_shape: Optional[Sequence[int]]) -> Optional[np.ndarray]:
  """Outgoing connections per input pixel (channels summed) of a dense kernel reading a flattened image."""
  if input_shape is None or mask.ndim != 2 or len(input_shape) not in (2, 3):
    return None
  if mask.shape[0] != int(np.prod(input_shape)):
    return None
  fan_out = mask.sum(axis=1).reshape(input_shape)
  return fan_out.sum(axis=-1) if len(input_shape) == 3 else fan_out


def plot_masks(snapshot: Dict[str, np.ndarray], step: int, path: str) -> str:
  """One panel per recorded kernel (white = active), plus the per-pixel fan-out of a first layer on images."""
  masks = monitoring.masks_of(snapshot)
  panels = []  # (title, image, is_fan_out)
  for name, mask in masks.items():
    shape = "x".join(str(d) for d in mask.shape)
    panels.append((f"{name} {shape}\ndensity {mask.mean() if mask.size else 0.0:.3f}", _as_matrix(mask), False))
  first = next(iter(masks.items()), None)
  fan_out = _pixel_fan_out(first[1], monitoring.input_shape_of(snapshot)) if first else None
  if fan_out is not None:
    panels.insert(0, (f"{first[0]}: outgoing connections\nper input pixel", fan_out, True))
  columns = max(1, min(len(panels), 3))
  rows = -(-len(panels) // columns)
  figure = Figure(figsize=(4.5 * columns, 4.2 * rows), layout="constrained")
  for index, (title, image, is_fan_out) in enumerate(panels):
    axes = figure.add_subplot(rows, columns, index + 1)
    if is_fan_out:
      shown = axes.imshow(image, cmap="viridis", interpolation="nearest")
      figure.colorbar(shown, ax=axes, fraction=0.046)
      axes.set_axis_off()
    else:
      axes.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
      axes.set(xlabel="output", ylabel="input")
    axes.set_title(title, fontsize="small")
  figure.suptitle(f"Masks after {step} steps")
  figure.savefig(path, dpi=100)
  return path


def default_steps(recorded: Sequence[int]) -> List[int]:
  """First, middle and last recorded steps (fewer when fewer were recorded)."""
  recorded = sorted(recorded)
  if not recorded:
    return []
  return sorted({recorded[0], recorded[len(recorded) // 2], recorded[-1]})


def plot_run(model_dir: str, output_dir: str, steps: Union[None, str, Iterable[int]] = None,
             summary_subdir: str = "sparsity", mask_subdir: str = "masks") -> List[str]:
  """Writes every picture of the run in `model_dir` into `output_dir`; returns the files written.

  `steps` chooses the mask snapshots to draw: None for the first, middle and last recorded, "all", or step numbers
  that were recorded.
  Raises ValueError (before writing anything) when the run has nothing to draw or a step was not recorded.
  """
  scalars = read_scalars(os.path.join(model_dir, summary_subdir))
  history = monitoring.load_mask_history(os.path.join(model_dir, mask_subdir))
  if not scalars and not history:
    raise ValueError(f"{model_dir} has no sparsity summaries ({summary_subdir}/) or mask snapshots "
                     f"({mask_subdir}/); pass the --model_dir of a `tfm train` run.")
  if steps is None:
    chosen = default_steps(history)
  elif steps == "all":
    chosen = list(history)
  else:
    chosen = sorted(set(int(s) for s in steps))
  missing = [s for s in chosen if s not in history]
  if missing:
    recorded = list(history)
    shown = ", ".join(str(s) for s in recorded[:20]) + (", ..." if len(recorded) > 20 else "")
    raise ValueError(f"no mask snapshot at step(s) {missing}; recorded steps are: {shown or 'none'}.")
  os.makedirs(output_dir, exist_ok=True)
  written = []
  if scalars:
    written.append(plot_sparsity(scalars, os.path.join(output_dir, "sparsity.png")))
    written.append(plot_turnover(scalars, os.path.join(output_dir, "mask_turnover.png")))
  for step in chosen:
    written.append(plot_masks(history[step], step, os.path.join(output_dir, f"masks_step_{step:08d}.png")))
  return written
