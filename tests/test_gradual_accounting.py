"""Training FLOPs of gradual pruning follow the density step by step (issue 19): the core sum against hand-computed
numbers, and the same sums in the Python report, the live TensorBoard scalars, the summary table and `tfm report`."""
import os

import numpy as np
import pytest
import tf_keras as keras
from official.core import exp_factory

import tfmot_rigl
from tfmot_rigl.cli import report as report_cli
from tfmot_rigl.core import accounting
from tfmot_rigl.core import gradual
from tfmot_rigl.core import training_flops
from tfmot_rigl.keras import accounting as keras_accounting
from tfmot_rigl import plots
from tfmot_rigl.modelgarden import summaries
from test_summaries import read_events

# One 10×10 Dense kernel without bias: f(nnz) = nnz multiplies + (nnz − 10) adds; f_D = 190.
# s_0 = 0.5, s_f = 0.9, ΔT = 2, prune_end 4, updates end at 6, 10 steps. Counts after the updates at steps 0, 2, 4,
# 6: 50, 100 − floor(100 · (0.9 − 0.4 · 0.5³) = 85) = 15, 10, 10. So f = 90 on steps 0–2, 20 on 3–4, 10 on 5–9.
HAND = {
    "set": 3 * 3 * 90 + 2 * 3 * 20 + 5 * 3 * 10,                       # 1080
    # RigL: the update steps 0, 2 (f = 90), 4 (f = 20) and 6 (f = 10) cost 2f + 190 instead of 3f.
    "rigl": 1080 + 2 * (190 - 90) + (190 - 20) + (190 - 10),           # 1630
    "snfs": 3 * (2 * 90 + 190) + 2 * (2 * 20 + 190) + 5 * (2 * 10 + 190),  # 2620
}
# The first 5 steps (0–4) only: what the live summaries report at step 5.
HAND_AT_5 = {"rigl": 3 * 3 * 90 + 2 * (190 - 90) + 2 * 3 * 20 + (190 - 20)}  # 1300


def _plan():
  return training_flops.GradualPlan((training_flops.GradualKernel(0, 100, 1, 0.5, 0.9),), begin_step=0, prune_end=4,
                                    end_step=6, update_frequency=2)


@pytest.mark.parametrize("method", sorted(HAND))
def test_core_sum_equals_the_hand_computed_one(method):
  ops = [accounting.LayerOp("fc", "dense", (10,), (10, 10))]
  report = accounting.build_report(ops, method=method, steps=10, batch_size=3, gradual=_plan())
  assert report["training"]["total_flops"] == pytest.approx(3 * HAND[method])
  assert report["training"]["gradual_phases"] == [[0, 90], [3, 20], [5, 10]]
  assert report["training"]["dense_total_flops"] == 3 * 190 * 10 * 3
  assert gradual.active_counts(100, 0.5, 0.9, 0, 4, 2) == [50, 15, 10]


def _gradual_model(method="rigl", steps=10):
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.layers.Dense(10, use_bias=False, input_shape=(10,), name="fc")])
  algorithm = tfmot_rigl.make_algorithm(method, update_frequency=2, end_step=6, initial_sparsity=0.5, prune_end=4)
  model = tfmot_rigl.prune_sparse(model, algorithm, sparsity=0.9, distribution="uniform", first_layer_dense=False,
                                  total_steps=steps)
  return model, algorithm


@pytest.mark.parametrize("method", sorted(HAND))
def test_python_report_sums_the_schedule(method):
  model, algorithm = _gradual_model(method)
  report = keras_accounting.report(model, algorithm, steps=10, batch_size=3)
  assert report["training"]["total_flops"] == pytest.approx(3 * HAND[method])
  # Without the gradual option the paper's formula stands (RigL at 90% throughout: (3·10·2 + 2·10 + 190)/3 a step).
  keras.utils.set_random_seed(0)
  plain = tfmot_rigl.prune_sparse(keras.Sequential([keras.layers.Dense(10, use_bias=False, input_shape=(10,))]),
                                  tfmot_rigl.RigL(update_frequency=2, end_step=6), sparsity=0.9,
                                  distribution="uniform", first_layer_dense=False, total_steps=10)
  counted = keras_accounting.report(plain, "rigl", steps=10, batch_size=3, update_frequency=2)["training"]
  assert counted["total_flops"] == pytest.approx((60 + 20 + 190) / 3 * 10 * 3) and "gradual_phases" not in counted


def test_live_scalars_summary_table_and_sparsity_plot_follow_the_schedule(tmp_path, capsys):
  model, algorithm = _gradual_model()
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), model)
  kernel = model.trainable_variables[0]
  reporter = summaries.SparseTrainingReporter(model, optimizer, str(tmp_path), algorithm, train_steps=10,
                                              batch_size=3, evaluates=False)
  optimizer.build(model.trainable_variables)
  reporter.start()
  grads = np.random.RandomState(0).randn(10, 10, 10).astype(np.float32)
  for step in range(10):
    optimizer.apply_gradients([(grads[step], kernel)])
    if step + 1 in (5, 10):
      reporter.on_train_loop_end({})
  events = read_events(os.path.join(str(tmp_path), "sparsity"))
  flops = events[summaries.TRAINING_FLOPS_TAG]
  assert flops[5] == pytest.approx(3 * HAND_AT_5["rigl"]) and flops[10] == pytest.approx(3 * HAND["rigl"])
  assert events[summaries.TRAINING_FLOPS_RATIO_TAG][10] == pytest.approx(HAND["rigl"] / (3 * 190 * 10), rel=1e-6)
  table = capsys.readouterr().out
  row = next(line for line in table.splitlines() if line.startswith("training FLOPs so far")).split()
  assert float(row[-3]) == pytest.approx(3 * HAND["rigl"], rel=1e-3)
  # The sparsity summaries (what `tfm plot` draws in sparsity.png) follow the schedule: 0.5 at the start, 0.9 from
  # the update at prune_end (step 4) on.
  assert sorted(events["sparsity/fc"].items()) == [(0, 0.5), (5, pytest.approx(0.9)), (10, pytest.approx(0.9))]
  assert plots.plot_run(str(tmp_path), str(tmp_path / "plots"))[0].endswith("sparsity.png")


def _brute_force(ops, plan, steps, method):
  """Σ_t of one example's training FLOPs, one step at a time from the plan's counts (no phases)."""
  import dataclasses
  dense = accounting.inference_flops(ops, dense=True)[1]
  updates = set(plan.update_steps(steps))
  total, nonzeros = 0.0, plan.nonzeros_after(None)
  for t in range(steps):
    f = accounting.inference_flops([dataclasses.replace(op, nonzeros=nonzeros[i]) if i in nonzeros else op
                                    for i, op in enumerate(ops)])[1]
    total += 2 * f + dense if (t in updates and method == "rigl") else 3 * f
    if t in updates:
      nonzeros = plan.nonzeros_after(t)
  return total


def test_tfm_report_counts_the_gradual_schedule():
  params = exp_factory.get_exp_config("mnist_rigl")
  params.override({"trainer": {"train_steps": 40}, "task": {
      "model": {"backbone": {"mlp": {"hidden_sizes": [32, 16]}}, "input_size": [28, 28, 1]},
      "train_data": {"global_batch_size": 8},
      "sparsity": {"update_frequency": 5, "initial_sparsity": 0.5, "prune_end": 0.5}}})
  params.validate()
  report = report_cli.experiment_report(params, experiment="mnist_rigl")
  from tfmot_rigl.export import saved_model
  sparse_model = saved_model.build_sparse_model(params)
  ops, plan = keras_accounting.describe_for_training(sparse_model, steps=40)
  assert plan is not None and plan.prune_end == 20 and len(plan.kernels) == 3
  assert report["training"]["total_flops"] == pytest.approx(8 * _brute_force(ops, plan, 40, "rigl"), rel=1e-9)
  assert np.isclose(report["training"]["flops_per_example"] * 40 * 8, report["training"]["total_flops"])
