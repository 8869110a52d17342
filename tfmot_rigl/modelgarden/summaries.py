"""What `tfm train` shows while and after it trains: progress lines, sparsity summaries, mask history, a final table.

`SparseTrainingReporter` plugs into Model Garden's Orbit controller as one train action and one eval action:
`tfm train` builds it with `reporter_for_experiment`, hands its actions to Model Garden's `OrbitExperimentRunner`
and calls `start()` once the runner has restored the checkpoint. What it records is set by a `MonitoringConfig`
(taken from `task.monitoring` when the experiment config has that block). After every train loop it
  * prints one progress line (`progress_line`): step, steps/s, loss, accuracy, sparsity, drop fraction and the last
    mask-update step;
  * compares the masks with the previous loop's (`tfmot_rigl.keras.monitoring.MaskMonitor`) and writes, beside
    Orbit's model_dir/train and model_dir/validation, into model_dir/sparsity:
      - the mask tags of `tfmot_rigl.keras.monitoring` (sparsity/<kernel>, overall_sparsity,
        mask_update/{dropped,grown,grown_fraction,grown_then_dropped}/<kernel>, mask_update/drop_fraction,
        mask_update/updates_merged);
      - training_flops/cumulative, training_flops/dense_cumulative, training_flops/ratio_to_dense: training FLOPs
        so far (the paper's per-method formulas, tfmot_rigl.core.accounting) and those of dense training;
      - TFMOT's own `PruningSummaries` (<mask variable>/sparsity, <threshold variable>/threshold) in
        model_dir/sparsity/metrics;
  * saves a mask snapshot in model_dir/masks (`MaskHistory`) when masks were updated, for `tfm plot`.
At the end of training (after the final evaluation when there is one) it prints `summary_table`: test accuracy,
sparsity per kernel, inference FLOPs and model size against the dense model, and training FLOPs against dense
training.

Orbit calls train actions once per loop of `trainer.steps_per_loop` steps. With steps_per_loop <= the update
frequency every loop holds at most one mask update and each is reported on its own; a longer loop reports the net
change of its updates at the last one (mask_update/updates_merged says how many).
"""
import dataclasses
import math
import sys
import time
from typing import Mapping, Optional, Sequence, TextIO

import numpy as np
import tensorflow as tf
import tf_keras as keras
from official.modeling import hyperparams
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_callbacks

from tfmot_rigl import algorithms
from tfmot_rigl.core import accounting
from tfmot_rigl.keras import accounting as keras_accounting
from tfmot_rigl.keras import monitoring
from tfmot_rigl.keras.prune import sparse_wrappers
from tfmot_rigl.keras.wrapper import SparseWrapper

TRAINING_FLOPS_TAG = "training_flops/cumulative"
DENSE_TRAINING_FLOPS_TAG = "training_flops/dense_cumulative"
TRAINING_FLOPS_RATIO_TAG = "training_flops/ratio_to_dense"

# Names Model Garden's trainer gives its outputs (training_loss from the trainer, accuracy from the task's metrics).
_LOSS_KEYS = ("training_loss", "loss")
_ACCURACY_KEYS = ("accuracy", "top_1_accuracy")


@dataclasses.dataclass
class MonitoringConfig(hyperparams.Config):
  """What `tfm train` reports beside Model Garden's own summaries.

  Attributes:
    progress_lines: print one progress line per train loop.
    final_summary: print the summary table at the end of training.
    summary_subdir: model_dir subdirectory of the sparsity TensorBoard summaries.
    mask_subdir: model_dir subdirectory of the mask snapshots read by `tfm plot`.
    record_masks_every: keep every n-th mask snapshot (one at the start, then one per loop with a mask update);
      0 records none.
    max_recorded_mask_size: kernels with more entries than this are not recorded.
  """
  progress_lines: bool = True
  final_summary: bool = True
  summary_subdir: str = "sparsity"
  mask_subdir: str = "masks"
  record_masks_every: int = 1
  max_recorded_mask_size: int = monitoring.DEFAULT_MAX_RECORDED_SIZE


def _number(value) -> Optional[float]:
  if value is None:
    return None
  value = float(np.asarray(value))
  return None if math.isnan(value) else value


def _first(output: Mapping, keys: Sequence[str]) -> Optional[float]:
  for key in keys:
    if key in output:
      return _number(output[key])
  return None


def _or_dash(value, fmt: str) -> str:
  return "-" if value is None else format(value, fmt)


def progress_line(step: int, total_steps: Optional[int], steps_per_second: Optional[float], loss: Optional[float],
                  accuracy: Optional[float], sparsity: Optional[float], drop_fraction: Optional[float],
                  last_update: Optional[int]) -> str:
  """One line of training progress; unknown values print as '-'.

  e.g. `sparse | step   600/6000 |  52.3 steps/s | loss 0.3124 | accuracy 0.9123 | sparsity 0.9000 |
  drop fraction 0.2890 | last mask update 500` (on one line).
  """
  width = len(str(total_steps)) if total_steps else 6
  of_total = f"/{total_steps}" if total_steps else ""
  return (f"sparse | step {step:>{width}d}{of_total} | {_or_dash(steps_per_second, '5.1f')} steps/s | "
          f"loss {_or_dash(loss, '.4f')} | accuracy {_or_dash(accuracy, '.4f')} | "
          f"sparsity {_or_dash(sparsity, '.4f')} | drop fraction {_or_dash(drop_fraction, '.4f')} | "
          f"last mask update {_or_dash(last_update, 'd')}")


def _shape(shape) -> str:
  return "x".join(str(d) for d in shape)


def model_sparsity(masks: Mapping[str, np.ndarray], kernel_params: float) -> float:
  """Zeros of the masks over every conv/dense kernel parameter (unmasked kernels count as dense)."""
  zeros = sum(mask.size - np.count_nonzero(mask) for mask in masks.values())
  return zeros / kernel_params if kernel_params else 0.0


def summary_table(report: dict, masks: Mapping[str, np.ndarray], step: int, method: str,
                  accuracy: Optional[float] = None) -> str:
  """The end-of-training table: accuracy, per-kernel sparsity and the accounting totals against dense."""
  width = max(30, *(len(name) + 2 for name in masks)) if masks else 30
  lines = [f"Sparse training summary: {method}, step {step}",
           f"{'test accuracy':<{width}}{'not evaluated' if accuracy is None else format(accuracy, '.4f')}",
           ""]
  if masks:
    lines.append(f"{'kernel':<{width}}{'shape':>14}{'sparsity':>12}")
    for name, mask in masks.items():
      lines.append(f"{name:<{width}}{_shape(mask.shape):>14}{monitoring.sparsities({name: mask})[name]:>12.4f}")
    lines.append(f"{'all sparsified kernels':<{width}}{'':>14}{monitoring.overall_sparsity(masks):>12.4f}")
    # The global target covers every conv/dense kernel the distribution saw, including those it left dense.
    lines.append(f"{'all conv/dense kernels':<{width}}{'':>14}"
                 f"{model_sparsity(masks, report['totals']['kernel_params']):>12.4f}")
  else:
    lines.append("no sparsified kernels (dense training)")
  totals = report["totals"]
  rows = [("inference FLOPs / example", totals["flops"], totals["dense_flops"], totals["flops_ratio"]),
          ("model size (bytes)", totals["size_bytes"], totals["dense_size_bytes"], totals["size_ratio"])]
  training = report.get("training")
  if training:
    rows.append(("training FLOPs so far", training["total_flops"], training["dense_total_flops"],
                 training["flops_ratio"]))
  lines += ["", f"{'':<{width}}{'sparse':>14}{'dense':>14}{'ratio':>10}"]
  for label, sparse, dense, ratio in rows:
    lines.append(f"{label:<{width}}{sparse:>14.4g}{dense:>14.4g}{ratio:>10.4f}")
  return "\n".join(lines)


def _schedule_knobs(model, algorithm: algorithms.SparseAlgorithm) -> dict:
  """The accounting's schedule knobs (ΔT, resolved begin/end steps, power) as the model's wrappers hold them."""
  knobs = {"update_frequency": algorithm.update_frequency}
  for wrapper in sparse_wrappers(model):
    schedule = wrapper.pruning_schedule
    if isinstance(wrapper, SparseWrapper):
      knobs.update(begin_step=schedule.begin_step, end_step=schedule.end_step)
    else:  # TFMOT's PolynomialDecay (magnitude pruning)
      config = schedule.get_config()["config"]
      knobs.update(begin_step=config["begin_step"], end_step=config["end_step"], power=config.get("power", 3))
    break
  return knobs


def _target_sparsities(model) -> dict:
  """{layer name: final target sparsity} of TFMOT magnitude-pruning wrappers (masks are dense until pruned)."""
  targets = {}
  for wrapper in sparse_wrappers(model):
    if not isinstance(wrapper, SparseWrapper):
      targets[wrapper.layer.name] = float(wrapper.pruning_schedule.get_config()["config"]["final_sparsity"])
  return targets


class SparseTrainingReporter:
  """Orbit train and eval actions that report sparse training (see the module docstring).

  Args:
    model: the trained model (with sparse wrappers, or dense for method=dense).
    optimizer: its optimizer; `optimizer.iterations` is the step the mask schedules count.
    model_dir: the experiment directory.
    algorithm: the `SparseAlgorithm` being trained (its name and ΔT enter the training-FLOPs formulas).
    train_steps: total training steps.
    batch_size: global training batch size.
    evaluates: an evaluation follows the last train loop (the table then waits for its accuracy).
    config: a `MonitoringConfig`.
    stream: where progress lines and the table are printed.
    writes: write summaries and mask snapshots; False for evaluation-only jobs, which only print the table (and
      would otherwise write beside the training job that owns model_dir).
  """

  def __init__(self, model, optimizer, model_dir: str, algorithm: algorithms.SparseAlgorithm, train_steps: int,
               batch_size: int, evaluates: bool = True, config: Optional[MonitoringConfig] = None,
               stream: Optional[TextIO] = None, writes: bool = True):
    self.model = model
    self.optimizer = optimizer
    self.algorithm = algorithm
    self.train_steps = int(train_steps)
    self.batch_size = int(batch_size)
    self.evaluates = evaluates
    self.config = config or MonitoringConfig()
    self.stream = stream
    self.writes = writes
    log_dir = tf.io.gfile.join(model_dir, self.config.summary_subdir)
    self.history = monitoring.MaskHistory(tf.io.gfile.join(model_dir, self.config.mask_subdir),
                                          self.config.record_masks_every if writes else 0,
                                          self.config.max_recorded_mask_size)
    self._writer = tf.summary.create_file_writer(log_dir) if writes else None
    self._pruning_summaries = None
    if writes and sparse_wrappers(model):
      # TFMOT's own per-mask summaries, set up as Model Garden's PruningAction does: the callback reads the step from
      # model.optimizer, which a model trained by Orbit (never compiled) does not otherwise have.
      self._pruning_summaries = pruning_callbacks.PruningSummaries(log_dir=log_dir, write_graph=False)
      if getattr(model, "optimizer", None) is None:
        model.optimizer = optimizer
      self._pruning_summaries.set_model(model)
    self.monitor = None
    self.accuracy = None
    self._ops = self._gradual = None
    self._timer_step = None
    self._timer_start = None
    self._reported_final = False

  # --- Orbit actions ---------------------------------------------------------------------------------------------
  @property
  def train_actions(self):
    return [self.on_train_loop_end]

  @property
  def eval_actions(self):
    return [self.on_eval_end]

  def step(self) -> int:
    return int(keras.backend.get_value(self.optimizer.iterations))

  def start(self):
    """Takes the masks to compare against. Call it after the checkpoint is restored and before training; otherwise
    the first train loop starts it, and its own mask changes go unreported."""
    step = self.step()
    self.monitor = monitoring.MaskMonitor(self.model, step)
    self._restart_timer(step)
    self._write(step, [])

  def on_train_loop_end(self, output: Mapping):
    if self.monitor is None:
      self.start()
    step = self.step()
    steps_per_second = self._steps_per_second(step)
    changes = self.monitor.observe(step)
    masks = self.monitor.masks
    report = self.report(step)
    self._write(step, changes, report.get("training"))
    if self.config.progress_lines:
      last_update = monitoring.last_update_step(self.model, step)
      self._print(progress_line(
          step, self.train_steps, steps_per_second, _first(output, _LOSS_KEYS), _first(output, _ACCURACY_KEYS),
          model_sparsity(masks, report["totals"]["kernel_params"]) if masks else None,
          monitoring.drop_fraction_at(self.model, last_update), last_update))
    if step >= self.train_steps and not self.evaluates:
      self._final_summary(step)
    self._restart_timer(step)

  def on_eval_end(self, output: Mapping):
    self.accuracy = _first(output, _ACCURACY_KEYS)
    step = self.step()
    if step >= self.train_steps:
      self._final_summary(step)
    # Steps/s of the next loop should not count the evaluation.
    self._restart_timer(step)

  # --- pieces ----------------------------------------------------------------------------------------------------
  def _write(self, step: int, changes, training: Optional[dict] = None):
    """Summaries of this observation, TFMOT's pruning summaries, training FLOPs, and a mask snapshot."""
    if not self.writes:
      return
    masks = self.monitor.masks
    monitoring.write_mask_summaries(self._writer, step, masks, changes, self.monitor.skipped)
    if self._pruning_summaries is not None:
      self._pruning_summaries.on_epoch_begin(epoch=None)
    if training:
      with self._writer.as_default():
        tf.summary.scalar(TRAINING_FLOPS_TAG, training["total_flops"], step=step)
        tf.summary.scalar(DENSE_TRAINING_FLOPS_TAG, training["dense_total_flops"], step=step)
        tf.summary.scalar(TRAINING_FLOPS_RATIO_TAG, training["flops_ratio"], step=step)
      self._writer.flush()
    if changes or not self.history.saved:
      self.history.maybe_save(step, masks, monitoring.model_input_shape(self.model))

  def report(self, step: int, fresh: bool = False) -> dict:
    """The accounting report with training FLOPs for `step` steps so far.

    The model is traced once (after the first loop, so SNIP's one-shot masks are in place) unless `fresh`: masks
    of the dynamic methods keep each layer's nonzero count, so its FLOPs do not change; magnitude pruning is counted
    at its final per-layer targets, as the accounting defines it.
    """
    if self._ops is None or fresh:
      # Gradual pruning (set/rigl/snfs) also gets its plan: training FLOPs then follow the density step by step.
      self._ops, self._gradual = keras_accounting.describe_for_training(
          self.model, sparsities=_target_sparsities(self.model) or None, steps=self.train_steps)
    if step <= 0:
      return accounting.build_report(self._ops)
    return accounting.build_report(self._ops, method=self.algorithm.name, steps=step, batch_size=self.batch_size,
                                   gradual=self._gradual,
                                   **_schedule_knobs(self.model, self.algorithm))

  def _final_summary(self, step: int):
    if self._reported_final or not self.config.final_summary:
      return
    self._reported_final = True
    masks = monitoring.read_masks(self.model)
    self._print(summary_table(self.report(step, fresh=True), masks, step, self.algorithm.name, self.accuracy))

  def _restart_timer(self, step: int):
    self._timer_step, self._timer_start = step, time.monotonic()

  def _steps_per_second(self, step: int) -> Optional[float]:
    if self._timer_start is None:
      return None
    elapsed = time.monotonic() - self._timer_start
    return (step - self._timer_step) / elapsed if elapsed > 0 else None

  def _print(self, text: str):
    print(text, file=self.stream or sys.stdout, flush=True)


def reporter_for_experiment(params, trainer, model_dir: str, mode: str, stream: Optional[TextIO] = None):
  """The `SparseTrainingReporter` of a Model Garden run of a sparse experiment (`tfm train`)."""
  task = params.task
  sparsity = getattr(task, "sparsity", None)
  algorithm = sparsity.algorithm() if sparsity is not None else algorithms.Dense()
  config = getattr(task, "monitoring", None) or MonitoringConfig()
  evaluates = mode in ("train_and_eval", "train_and_post_eval")
  return SparseTrainingReporter(
      trainer.model, trainer.optimizer, model_dir, algorithm,
      train_steps=params.trainer.train_steps, batch_size=task.train_data.global_batch_size, evaluates=evaluates,
      config=config, stream=stream, writes="train" in mode)
