"""What the mask updates did: per-kernel sparsity, connections dropped and grown, and a history of masks.

Mask updates run inside the train step (tfmot_rigl.keras.optimizer) at steps every layer's schedule fixes in
advance, so the host can see what they did by comparing the masks it reads now with those it read last time; the
compiled step carries no extra state or work. `MaskMonitor.observe(step)` returns one `MaskChange` per sparsified
kernel whenever a scheduled update step was passed (or a mask changed) since the previous observation. Observing
after every update step — what `SparsitySummaries` does under `model.fit`, and what an Orbit loop does when
steps_per_loop <= update_frequency — sees each update on its own; a coarser observation reports the net change of
the updates it spans, and says how many (`MaskChange.updates`).

TensorBoard tags written by `write_mask_summaries` (stable; tfm plot reads them back):
  sparsity/<kernel>                      fraction of zeros in the kernel's mask, at every observation
  overall_sparsity                       the same over all sparsified kernels (parameter-weighted)
  mask_update/dropped/<kernel>           connections active before the update and inactive after it
  mask_update/grown/<kernel>             connections inactive before the update and active after it
  mask_update/grown_fraction/<kernel>    grown / active after the update: the share of the kernel's connections
                                         that are new (the mask turnover)
  mask_update/grown_then_dropped/<kernel>  of the connections grown at the previous update, the fraction this
                                         update dropped again (absent until an update has grown some)
  mask_update/drop_fraction              f(t) of the schedule at the update step (dynamic methods only)
  mask_update/updates_merged             scheduled update steps one observation covered (1: exact)
  mask_update/skipped/<layer>            mask updates skipped so far because the layer's gradient or weights were
                                         not finite (NaN/Inf); written once it is non-zero
Mask-update values are written at the update step t (the step run with optimizer.iterations == t); sparsities at
the observation step (optimizer.iterations after the observed steps). <kernel> is the layer name, or
"layer/weight" for a layer with several sparsified weights (as in `tfmot_rigl.model_sparsities`).

`MaskHistory` keeps snapshots of the masks as <directory>/step_<step>.npz (one bool array per kernel), which
`tfm plot` draws; kernels larger than `max_size` entries are left out so big models stay cheap to record.
"""
import dataclasses
import glob
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from absl import logging
import numpy as np
import tensorflow as tf
import tf_keras as keras

from tfmot_rigl.keras.prune import sparse_wrappers
from tfmot_rigl.keras.wrapper import SparseWrapper

SPARSITY_TAG = "sparsity/{}"
OVERALL_SPARSITY_TAG = "overall_sparsity"
DROPPED_TAG = "mask_update/dropped/{}"
GROWN_TAG = "mask_update/grown/{}"
GROWN_FRACTION_TAG = "mask_update/grown_fraction/{}"
GROWN_THEN_DROPPED_TAG = "mask_update/grown_then_dropped/{}"
DROP_FRACTION_TAG = "mask_update/drop_fraction"
UPDATES_MERGED_TAG = "mask_update/updates_merged"
SKIPPED_TAG = "mask_update/skipped/{}"

# 2**20 entries keeps every MNIST / CIFAR kernel and drops only the largest ResNet-50 ones (≈1 MB each as npz).
DEFAULT_MAX_RECORDED_SIZE = 2 ** 20
_SNAPSHOT = re.compile(r"step_(\d+)\.npz$")
_INPUT_SHAPE_KEY = "__input_shape__"


@dataclasses.dataclass(frozen=True)
class MaskChange:
  """What the mask update(s) since the previous observation did to one kernel.

  Attributes:
    name: the kernel's name (layer name, or "layer/weight").
    step: the (last) scheduled update step covered; masks changed in the step run with optimizer.iterations == step.
    updates: scheduled update steps covered; 1 means this is exactly one update.
    size: entries of the kernel.
    active: nonzeros of the mask after the change.
    dropped: connections active before and inactive after.
    grown: connections inactive before and active after.
    grown_then_dropped: of the connections grown at the previous change, the fraction dropped by this one; None when
      no previous change grew any.
    drop_fraction: the schedule's f(t) at `step`, None for layers without one (e.g. TFMOT's magnitude pruning).
  """
  name: str
  step: int
  updates: int
  size: int
  active: int
  dropped: int
  grown: int
  grown_then_dropped: Optional[float]
  drop_fraction: Optional[float]

  @property
  def sparsity(self) -> float:
    return 1.0 - self.active / self.size

  @property
  def grown_fraction(self) -> float:
    return self.grown / self.active if self.active else 0.0


def kernel_names(model) -> List[str]:
  """Names of the sparsified kernels of `model`, in model order (one per (kernel, mask) of every wrapper)."""
  return [name for name, _, _ in _kernels(model)]


def _kernels(model) -> List[Tuple[str, keras.layers.Layer, tf.Variable]]:
  found = []
  for wrapper in sparse_wrappers(model):
    layer_name = wrapper.layer.name
    for weight, mask, _ in wrapper.pruning_vars:
      if len(wrapper.pruning_vars) == 1:
        name = layer_name
      else:
        weight_name = weight.name.split(":")[0]
        name = f"{layer_name}/{weight_name.removeprefix(layer_name + '/')}"
      found.append((name, wrapper, mask))
  return found


def update_grid(wrapper) -> Optional[Tuple[int, int, int]]:
  """(first, last, stride) of the steps at which `wrapper`'s masks may change; None when no schedule changes them.

  tfmot_rigl's dynamic methods update at multiples of ΔT inside [begin, end]; SNIP's one shot is at step 0; TFMOT's
  own schedules (magnitude pruning) prune at begin + k·frequency up to end (-1: no end).
  """
  schedule = wrapper.pruning_schedule
  if isinstance(wrapper, SparseWrapper):
    if wrapper.algorithm.name == "snip":
      return 0, 0, 1
    if not wrapper.algorithm.dynamic:
      return None
    stride = schedule.update_frequency
    return -(-schedule.begin_step // stride) * stride, schedule.end_step, stride
  config = schedule.get_config().get("config", {})
  if {"begin_step", "end_step", "frequency"} <= set(config):
    end = config["end_step"] if config["end_step"] >= 0 else sys.maxsize
    return int(config["begin_step"]), int(end), int(config["frequency"])
  return None


def grid_steps_between(grid, low: int, high: int) -> Tuple[int, Optional[int]]:
  """(how many, last) of the grid's steps t with low <= t <= high."""
  if grid is None:
    return 0, None
  first, last, stride = grid
  low, high = max(low, first), min(high, last)
  if high < low:
    return 0, None
  start = first + -(-(low - first) // stride) * stride
  end = first + ((high - first) // stride) * stride
  if start > end:
    return 0, None
  return (end - start) // stride + 1, end


def last_update_step(model, step: int) -> Optional[int]:
  """The latest scheduled mask-update step already run when optimizer.iterations == step (None if none)."""
  steps = [grid_steps_between(update_grid(wrapper), 0, step - 1)[1] for wrapper in sparse_wrappers(model)]
  steps = [s for s in steps if s is not None]
  return max(steps) if steps else None


def drop_fraction_at(model, step: Optional[int]) -> Optional[float]:
  """f(step) of the first dynamic layer's schedule (all layers share it), None without one."""
  if step is None:
    return None
  for wrapper in sparse_wrappers(model):
    if isinstance(wrapper, SparseWrapper) and wrapper.algorithm.dynamic:
      return float(wrapper.pruning_schedule.drop_fraction_at(int(step)))
  return None


def read_masks(model) -> Dict[str, np.ndarray]:
  """{kernel name: bool mask} of every sparsified kernel, read in one round trip."""
  kernels = _kernels(model)
  values = keras.backend.batch_get_value([mask for _, _, mask in kernels])
  return {name: np.asarray(value) > 0.5 for (name, _, _), value in zip(kernels, values)}


def sparsities(masks: Dict[str, np.ndarray]) -> Dict[str, float]:
  return {name: 1.0 - float(np.count_nonzero(mask)) / mask.size for name, mask in masks.items()}


def overall_sparsity(masks: Dict[str, np.ndarray]) -> float:
  size = sum(mask.size for mask in masks.values())
  return 1.0 - sum(int(np.count_nonzero(mask)) for mask in masks.values()) / size if size else 0.0


class MaskMonitor:
  """Compares the masks of `model` between observations (host-side, eager).

  Args:
    model: a model with sparse wrappers (from `prune_sparse`).
    step: optimizer.iterations now; the first observation covers the update steps from here on.
  """

  def __init__(self, model, step: int = 0):
    self.model = model
    self.step = int(step)
    self._grids = {name: update_grid(wrapper) for name, wrapper, _ in _kernels(model)}
    self._schedules = {name: wrapper.pruning_schedule for name, wrapper, _ in _kernels(model)
                       if isinstance(wrapper, SparseWrapper) and wrapper.algorithm.dynamic}
    self.masks = read_masks(model)
    self._grown = {name: None for name in self.masks}  # connections grown at the previous change
    self.skipped = read_skipped_updates(model)

  def _report_skipped(self, step: int):
    """Logs once per layer when its first mask update is skipped for non-finite values."""
    skipped = read_skipped_updates(self.model)
    for name, count in skipped.items():
      if count and not self.skipped.get(name):
        logging.warning("tfmot_rigl: the mask update of layer %r was skipped (by step %d): its gradient or weights "
                        "were not finite (NaN/Inf); its mask is unchanged. Further skips are counted in the "
                        "summary %s, not logged.", name, step, SKIPPED_TAG.format(name))
    self.skipped = skipped

  def due(self, step: int) -> bool:
    """Whether a scheduled update ran since the last observation, given optimizer.iterations == step (cheap)."""
    return any(grid_steps_between(grid, self.step, step - 1)[0] for grid in self._grids.values())

  def observe(self, step: int) -> List[MaskChange]:
    """Reads the masks after `step` training steps (optimizer.iterations == step); one MaskChange per kernel that a
    scheduled update step passed over or whose mask changed since the last observation."""
    step = int(step)
    self._report_skipped(step)
    masks = read_masks(self.model)
    changes = []
    for name, mask in masks.items():
      before = self.masks[name]
      updates, last = grid_steps_between(self._grids[name], self.step, step - 1)
      if not updates and np.array_equal(before, mask):
        continue
      dropped = before & ~mask
      grown = ~before & mask
      previously_grown = self._grown[name]
      grown_then_dropped = None
      if previously_grown is not None and previously_grown.any():
        grown_then_dropped = float(np.count_nonzero(previously_grown & dropped)) / np.count_nonzero(previously_grown)
      change_step = last if last is not None else step - 1
      schedule = self._schedules.get(name)
      changes.append(MaskChange(
          name=name, step=change_step, updates=max(updates, 1), size=mask.size, active=int(np.count_nonzero(mask)),
          dropped=int(np.count_nonzero(dropped)), grown=int(np.count_nonzero(grown)),
          grown_then_dropped=grown_then_dropped,
          drop_fraction=float(schedule.drop_fraction_at(change_step)) if schedule and last is not None else None))
      self._grown[name] = grown
    self.masks = masks
    self.step = step
    return changes


def read_skipped_updates(model) -> Dict[str, int]:
  """{layer name: mask updates skipped for non-finite values} of every SparseWrapper in `model`."""
  return {wrapper.layer.name: int(wrapper.skipped_updates.numpy()) for wrapper in sparse_wrappers(model)
          if isinstance(wrapper, SparseWrapper) and hasattr(wrapper, "skipped_updates")}


def write_mask_summaries(writer, step: int, masks: Dict[str, np.ndarray], changes: Sequence[MaskChange] = (),
                         skipped: Optional[Dict[str, int]] = None):
  """Writes the sparsities (at `step`) and the mask changes (at their update steps) with the tags listed above."""
  with writer.as_default():
    for name, value in sparsities(masks).items():
      tf.summary.scalar(SPARSITY_TAG.format(name), value, step=step)
    tf.summary.scalar(OVERALL_SPARSITY_TAG, overall_sparsity(masks), step=step)
    written = set()
    for change in changes:
      tf.summary.scalar(DROPPED_TAG.format(change.name), change.dropped, step=change.step)
      tf.summary.scalar(GROWN_TAG.format(change.name), change.grown, step=change.step)
      tf.summary.scalar(GROWN_FRACTION_TAG.format(change.name), change.grown_fraction, step=change.step)
      if change.grown_then_dropped is not None:
        tf.summary.scalar(GROWN_THEN_DROPPED_TAG.format(change.name), change.grown_then_dropped, step=change.step)
      if change.step not in written:  # one value per update for the whole model
        written.add(change.step)
        tf.summary.scalar(UPDATES_MERGED_TAG, change.updates, step=change.step)
        if change.drop_fraction is not None:
          tf.summary.scalar(DROP_FRACTION_TAG, change.drop_fraction, step=change.step)
    for name, count in (skipped or {}).items():
      if count:
        tf.summary.scalar(SKIPPED_TAG.format(name), count, step=step)
  writer.flush()


class MaskHistory:
  """Mask snapshots in `directory` as step_<step>.npz: one bool array per kernel name, for `tfm plot`.

  Args:
    directory: where the snapshots go (created on the first save).
    every: keep every `every`-th snapshot offered to `maybe_save` (1: all; 0: none).
    max_size: kernels with more entries are left out.
  """

  def __init__(self, directory: str, every: int = 1, max_size: int = DEFAULT_MAX_RECORDED_SIZE):
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
      raise ValueError(f"Mask recording every={every!r} must be an int >= 0 (1 records every update, 0 none).")
    self.directory = directory
    self.every = every
    self.max_size = int(max_size)
    self._offered = 0
    self.saved = []  # files written so far

  def maybe_save(self, step: int, masks: Dict[str, np.ndarray], input_shape=None) -> Optional[str]:
    """Saves every `every`-th call's masks; returns the file written, if any."""
    self._offered += 1
    if not self.every or (self._offered - 1) % self.every:
      return None
    return self.save(step, masks, input_shape)

  def save(self, step: int, masks: Dict[str, np.ndarray], input_shape=None) -> Optional[str]:
    kept = {name: np.asarray(mask, bool) for name, mask in masks.items() if mask.size <= self.max_size}
    if not kept:
      return None
    tf.io.gfile.makedirs(self.directory)
    path = os.path.join(self.directory, f"step_{int(step):08d}.npz")
    if input_shape is not None:
      # The model's input shape lets `tfm plot` draw a first dense layer's fan-out per input pixel.
      kept[_INPUT_SHAPE_KEY] = np.asarray([int(d) for d in input_shape], np.int64)
    np.savez_compressed(path, **kept)
    self.saved.append(path)
    return path


def load_mask_history(directory: str) -> Dict[int, Dict[str, np.ndarray]]:
  """{step: {kernel name: bool mask}} of the snapshots in `directory` (see `MaskHistory`), sorted by step."""
  history = {}
  for path in glob.glob(os.path.join(directory, "step_*.npz")):
    match = _SNAPSHOT.search(path)
    if match:
      with np.load(path) as snapshot:
        history[int(match.group(1))] = {name: snapshot[name] for name in snapshot.files}
  return dict(sorted(history.items()))


def input_shape_of(snapshot: Dict[str, np.ndarray]) -> Optional[Tuple[int, ...]]:
  """The model input shape a snapshot was recorded with, if any; `masks_of` drops it from the masks."""
  shape = snapshot.get(_INPUT_SHAPE_KEY)
  return tuple(int(d) for d in shape) if shape is not None else None


def masks_of(snapshot: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  return {name: mask for name, mask in snapshot.items() if name != _INPUT_SHAPE_KEY}


def model_input_shape(model) -> Optional[Tuple[int, ...]]:
  """One example's input shape (no batch dimension) of a single-input model, else None."""
  inputs = getattr(model, "inputs", None)
  if not inputs or len(inputs) != 1 or any(d is None for d in inputs[0].shape[1:]):
    return None
  return tuple(int(d) for d in inputs[0].shape[1:])


class SparsitySummaries(keras.callbacks.Callback):
  """`model.fit` callback: the summaries above in `log_dir`, exact at every mask update, and mask snapshots.

  After each batch it asks the schedules (no device work) whether an update step ran and only then reads masks, so
  it costs nothing between updates. TFMOT's own `tfmot.sparsity.keras.PruningSummaries` callback can be added
  beside it for TFMOT's usual per-mask summaries.

  Args:
    log_dir: directory of the TensorBoard event files.
    mask_dir: directory for mask snapshots (`MaskHistory`); None records none.
    record_every: keep every n-th snapshot (one is offered at the start and one per observed update).
    max_recorded_size: kernels larger than this are not recorded.
  """

  def __init__(self, log_dir: str, mask_dir: Optional[str] = None, record_every: int = 1,
               max_recorded_size: int = DEFAULT_MAX_RECORDED_SIZE):
    super().__init__()
    self.log_dir = log_dir
    self.history = MaskHistory(mask_dir, record_every, max_recorded_size) if mask_dir else None
    self.monitor = None
    self._writer = None
    self._epoch_start = 0

  def _iterations(self) -> int:
    return int(keras.backend.get_value(self.model.optimizer.iterations))

  def on_train_begin(self, logs=None):
    self._writer = tf.summary.create_file_writer(self.log_dir)
    self.monitor = MaskMonitor(self.model, self._iterations())
    write_mask_summaries(self._writer, self.monitor.step, self.monitor.masks)
    if self.history:
      self.history.maybe_save(self.monitor.step, self.monitor.masks, model_input_shape(self.model))

  def on_epoch_begin(self, epoch, logs=None):
    # Steps are counted on the host from here (batch indices), so batches between updates cost no device read.
    self._epoch_start = self._iterations()

  def on_train_batch_end(self, batch, logs=None):
    step = self._epoch_start + batch + 1
    if self.monitor.due(step):
      changes = self.monitor.observe(step)
      write_mask_summaries(self._writer, step, self.monitor.masks, changes, self.monitor.skipped)
      if self.history:
        self.history.maybe_save(step, self.monitor.masks, model_input_shape(self.model))

  def on_train_end(self, logs=None):
    step = self._iterations()
    changes = self.monitor.observe(step)
    write_mask_summaries(self._writer, step, self.monitor.masks, changes, self.monitor.skipped)
    self._writer.close()
