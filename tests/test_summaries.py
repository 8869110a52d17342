"""What a user sees of sparse training: mask-update summaries at the update steps, progress lines, the final table.

Summaries are read back from the event files with TensorFlow's own reader and checked against masks read
independently after every step.
"""
import glob
import os
import re

import gin
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfmot_rigl
from tfmot_rigl.cli import main as tfm
from tfmot_rigl.keras import accounting as keras_accounting
from tfmot_rigl.keras import monitoring
from tfmot_rigl.modelgarden import summaries

PROGRESS = re.compile(r"^sparse \| step +(\d+)/(\d+) \| +([\d.]+|-) steps/s \| loss ([\d.]+|-) \| "
                      r"accuracy ([\d.]+|-) \| sparsity ([\d.]+|-) \| drop fraction ([\d.]+|-) \| "
                      r"last mask update (\d+|-)$")


def read_events(log_dir):
  """{tag: {step: value}} of the event files directly in log_dir."""
  values = {}
  for path in glob.glob(os.path.join(log_dir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        values.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
  return values


def tiny_model():
  inputs = keras.Input((4, 4, 1))
  x = keras.layers.Flatten()(inputs)
  x = keras.layers.Dense(12, activation="relu", name="fc1")(x)
  return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def tiny_data(count=40):
  rng = np.random.default_rng(0)
  return rng.random((count, 4, 4, 1), dtype=np.float32), rng.integers(0, 3, count)


class MasksAfterEveryStep(keras.callbacks.Callback):
  """Independent record: the mask of every wrapped layer after every training step."""

  def on_train_begin(self, logs=None):
    self.masks = {int(self.model.optimizer.iterations.numpy()): self._read()}

  def on_train_batch_end(self, batch, logs=None):
    self.masks[int(self.model.optimizer.iterations.numpy())] = self._read()

  def _read(self):
    return {w.layer.name: w.pruning_vars[0][1].numpy() > 0.5 for w in tfmot_rigl.sparse_wrappers(self.model)}


def test_progress_line_format():
  line = summaries.progress_line(600, 6000, 52.31, 0.31234, 0.91234, 0.9, 0.289, 500)
  assert line == ("sparse | step  600/6000 |  52.3 steps/s | loss 0.3123 | accuracy 0.9123 | sparsity 0.9000 | "
                  "drop fraction 0.2890 | last mask update 500")
  assert PROGRESS.match(line).groups() == ("600", "6000", "52.3", "0.3123", "0.9123", "0.9000", "0.2890", "500")
  unknown = summaries.progress_line(10, 6000, None, None, None, None, None, None)
  assert PROGRESS.match(unknown).groups()[2:] == ("-",) * 6


def test_fit_summaries_are_written_at_every_update_step_and_match_the_masks(tmp_path):
  keras.utils.set_random_seed(0)
  algorithm = tfmot_rigl.RigL(update_frequency=2, end_step=6, drop_fraction=0.5, drop_fraction_anneal="cosine")
  model = tfmot_rigl.prune_sparse(tiny_model(), algorithm, sparsity=0.6, distribution="uniform",
                                  first_layer_dense=False, custom_sparsities={"logits": 0.0})
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.5), model)
  model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  truth = MasksAfterEveryStep()
  callback = monitoring.SparsitySummaries(str(tmp_path / "sparsity"), str(tmp_path / "masks"))
  x, y = tiny_data()
  model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[truth, callback])  # 10 steps
  events = read_events(str(tmp_path / "sparsity"))

  update_steps = [0, 2, 4, 6]
  assert sorted(events["mask_update/dropped/fc1"]) == update_steps
  assert sorted(events["mask_update/drop_fraction"]) == update_steps
  schedule = tfmot_rigl.sparse_wrappers(model)[0].pruning_schedule
  previously_grown = None
  for step in update_steps:
    # The update at step t happens in the step run with iterations == t: between masks[t] and masks[t + 1].
    before, after = truth.masks[step]["fc1"], truth.masks[step + 1]["fc1"]
    dropped, grown = before & ~after, ~before & after
    assert events["mask_update/dropped/fc1"][step] == dropped.sum()
    assert events["mask_update/grown/fc1"][step] == grown.sum()
    assert events["mask_update/grown_fraction/fc1"][step] == pytest.approx(grown.sum() / after.sum())
    assert events["mask_update/drop_fraction"][step] == pytest.approx(schedule.drop_fraction_at(step))
    assert events["mask_update/updates_merged"][step] == 1
    if previously_grown is not None and previously_grown.any():
      expected = (previously_grown & dropped).sum() / previously_grown.sum()
      assert events["mask_update/grown_then_dropped/fc1"][step] == pytest.approx(expected)
    else:
      assert step not in events.get("mask_update/grown_then_dropped/fc1", {})
    previously_grown = grown
  assert events["mask_update/dropped/fc1"][0] > 0  # RigL really replaced connections
  assert 10 in events["sparsity/fc1"]
  assert events["sparsity/fc1"][10] == pytest.approx(1 - truth.masks[10]["fc1"].mean())
  assert events["overall_sparsity"][10] == pytest.approx(1 - truth.masks[10]["fc1"].mean())
  # Snapshots: the start and after every update, identical to the masks at those steps.
  history = monitoring.load_mask_history(str(tmp_path / "masks"))
  assert list(history) == [0, 1, 3, 5, 7]
  for step, snapshot in history.items():
    np.testing.assert_array_equal(monitoring.masks_of(snapshot)["fc1"], truth.masks[step]["fc1"])
  assert monitoring.input_shape_of(history[0]) == (4, 4, 1)


def _custom_loop(model, optimizer, steps):
  x, y = tiny_data()
  loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

  @tf.function
  def train_step(inputs, labels):
    with tf.GradientTape() as tape:
      loss = loss_fn(labels, model(inputs, training=True))
    optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))

  for step in range(steps):
    train_step(x[4 * step:4 * step + 4], y[4 * step:4 * step + 4])


def test_monitor_reports_the_net_change_of_several_updates_at_the_last_one():
  keras.utils.set_random_seed(1)
  model = tfmot_rigl.prune_sparse(tiny_model(), tfmot_rigl.SET(update_frequency=2, end_step=8), sparsity=0.6,
                                  distribution="uniform", first_layer_dense=False, custom_sparsities={"logits": 0.0})
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), model)
  monitor = monitoring.MaskMonitor(model, step=0)
  start = monitor.masks["fc1"].copy()
  assert not monitor.due(0)
  _custom_loop(model, optimizer, 5)  # updates at steps 0, 2 and 4
  assert monitor.due(5)
  [change] = monitor.observe(5)
  now = monitor.masks["fc1"]
  assert (change.name, change.step, change.updates) == ("fc1", 4, 3)
  assert change.dropped == (start & ~now).sum() and change.grown == (~start & now).sum()
  assert change.dropped == change.grown > 0  # nnz is unchanged by updates
  assert change.active == now.sum() and change.sparsity == pytest.approx(1 - now.mean())
  assert change.grown_then_dropped is None  # nothing was grown before this observation
  assert change.drop_fraction == pytest.approx(tfmot_rigl.sparse_wrappers(model)[0].pruning_schedule
                                               .drop_fraction_at(4))
  assert monitor.observe(5) == []  # nothing new
  assert monitoring.last_update_step(model, 5) == 4 and monitoring.last_update_step(model, 0) is None


def test_static_masks_produce_no_mask_updates():
  model = tfmot_rigl.prune_sparse(tiny_model(), tfmot_rigl.Static(), sparsity=0.6, distribution="uniform",
                                  first_layer_dense=False)
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), model)
  monitor = monitoring.MaskMonitor(model)
  _custom_loop(model, optimizer, 3)
  assert not monitor.due(3) and monitor.observe(3) == []
  assert monitoring.last_update_step(model, 3) is None


def test_tfm_train_prints_progress_and_summary_and_writes_sparsity_summaries(tmp_path, capsys):
  model_dir = str(tmp_path / "run")
  overrides = ",".join([
      "trainer.train_steps=20", "trainer.steps_per_loop=5", "trainer.summary_interval=5",
      "trainer.checkpoint_interval=10", "trainer.validation_interval=10", "trainer.validation_steps=1",
      "task.sparsity.update_frequency=5", "task.model.backbone.mlp.hidden_sizes=[32,16]",
      "task.train_data.global_batch_size=16", "task.train_data.shuffle_buffer_size=64",
      "task.validation_data.global_batch_size=100"])
  # `tfm train` finalises gin's config, so a second run in one process (another test's) would fail on the lock.
  with gin.unlock_config():
    assert tfm.main(["train", "--experiment=mnist_rigl", "--mode=train_and_eval", f"--model_dir={model_dir}",
                     f"--params_override={overrides}"]) == 0
  out = capsys.readouterr().out

  progress = [PROGRESS.match(line) for line in out.splitlines() if line.startswith("sparse |")]
  assert all(progress), out
  assert [int(m.group(1)) for m in progress] == [5, 10, 15, 20]
  # Updates at 0, 5, 10 and 15 (end_step = 0.75 · 20); the line shows the latest one already run.
  assert [m.group(8) for m in progress] == ["0", "5", "10", "15"]
  assert all(abs(float(m.group(6)) - 0.90) <= 0.001 for m in progress)  # ERK 90% over all three kernels
  table = out[out.index("Sparse training summary: rigl, step 20"):]
  assert re.search(r"all conv/dense kernels +0\.900\d", table), table
  for row in ("test accuracy", "hidden_1", "hidden_2", "all sparsified kernels", "inference FLOPs / example",
              "model size (bytes)", "training FLOPs so far"):
    assert row in table, table
  accuracy = re.search(r"test accuracy +([\d.]+)", table)
  assert accuracy and 0.0 <= float(accuracy.group(1)) <= 1.0

  events = read_events(os.path.join(model_dir, "sparsity"))
  for kernel in ("hidden_1", "hidden_2"):
    assert sorted(events[f"mask_update/dropped/{kernel}"]) == [0, 5, 10, 15]
    assert sorted(events[f"sparsity/{kernel}"]) == [0, 5, 10, 15, 20]
  assert set(events["mask_update/updates_merged"].values()) == {1.0}  # one update per loop: each seen on its own
  assert events["mask_update/drop_fraction"][0] == pytest.approx(0.3)
  flops = events[summaries.TRAINING_FLOPS_TAG]
  assert sorted(flops) == [5, 10, 15, 20] and flops[20] == pytest.approx(4 * flops[5], rel=1e-6)
  assert all(0 < ratio < 0.5 for ratio in events[summaries.TRAINING_FLOPS_RATIO_TAG].values())
  # TFMOT's own pruning summaries, beside ours.
  tfmot_tags = read_events(os.path.join(model_dir, "sparsity", "metrics"))
  assert any(tag.endswith("mask:0/sparsity") for tag in tfmot_tags), sorted(tfmot_tags)
  assert sorted(int(os.path.basename(p)[5:13]) for p in glob.glob(os.path.join(model_dir, "masks", "*.npz"))) == [
      0, 5, 10, 15, 20]

  # ... and `tfm plot` draws that run.
  assert tfm.main(["plot", f"--model_dir={model_dir}"]) == 0
  written = capsys.readouterr().out.split()
  assert [os.path.basename(p) for p in written] == [
      "sparsity.png", "mask_turnover.png", "masks_step_00000000.png", "masks_step_00000010.png",
      "masks_step_00000020.png"]
  assert all(os.path.getsize(p) > 1000 for p in written)


def test_summary_table_lists_kernels_and_ratios_to_dense():
  model = tfmot_rigl.prune_sparse(tiny_model(), tfmot_rigl.RigL(end_step=50), sparsity=0.75, distribution="uniform",
                                  first_layer_dense=False, custom_sparsities={"logits": 0.0})
  masks = monitoring.read_masks(model)
  report = keras_accounting.report(model, "rigl", steps=10, batch_size=4, update_frequency=100)
  table = summaries.summary_table(report, masks, 10, "rigl", accuracy=None).splitlines()
  assert table[0] == "Sparse training summary: rigl, step 10"
  assert table[1].split() == ["test", "accuracy", "not", "evaluated"]
  assert table[4].split() == ["fc1", "16x12", "0.7500"]
  flops = next(line for line in table if line.startswith("inference FLOPs / example")).split()
  assert float(flops[-1]) == pytest.approx(report["totals"]["flops_ratio"], abs=1e-4) and float(flops[-1]) < 1
  assert any(line.startswith("training FLOPs so far") for line in table)
  dense = summaries.summary_table(keras_accounting.report(tiny_model()), {}, 10, "dense", accuracy=0.5)
  assert "0.5000" in dense and "no sparsified kernels (dense training)" in dense
  assert "training FLOPs so far" not in dense  # no training section without method and steps
