"""Mask updates that nothing can corrupt: non-finite gradients and weights, loss scaling, optimizers that decay or
average the weights, mixed precision, and optimizers that were never (or twice) wrapped."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras
from official.modeling.optimization import ema_optimizer
from official.modeling.optimization import lars

import tfmot_rigl
from tfmot_rigl.core import distributions

DYNAMIC = ["rigl", "set", "snfs"]


def _model(seed=0):
  keras.utils.set_random_seed(seed)
  inputs = keras.Input((12,))
  hidden = keras.layers.Dense(16, activation="relu", name="fc1")(inputs)
  outputs = keras.layers.Dense(3, name="fc2")(hidden)
  return keras.Model(inputs, keras.layers.Activation("linear", dtype="float32")(outputs))


def _every_step(method, **knobs):
  return tfmot_rigl.make_algorithm(method, update_frequency=1, begin_step=0, end_step=50,
                                   drop_fraction_anneal="constant", drop_fraction=0.5, **knobs)


def _sparse(method, optimizer):
  model = tfmot_rigl.prune_sparse(_model(), _every_step(method), sparsity=0.6,
                                  distribution="uniform", first_layer_dense=False)
  return model, tfmot_rigl.wrap_optimizer(optimizer, model)


def _kernels_masks(model):
  return [(kernel, mask) for w in tfmot_rigl.sparse_wrappers(model) for kernel, mask, _ in w.pruning_vars]


def _data(n=64):
  rng = np.random.RandomState(0)
  return rng.standard_normal((n, 12)).astype("float32"), rng.randint(0, 3, n)


def _assert_exact_sparsity(model, sparsity=0.6):
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    for kernel, mask, _ in wrapper.pruning_vars:
      mask = mask.numpy()
      assert mask.sum() == distributions.nonzeros(mask.size, sparsity), kernel.name
      assert np.all(tf.convert_to_tensor(kernel).numpy()[mask == 0] == 0), kernel.name


def _grads(model, nan_in=None, step=0):
  """Random gradients for every trainable variable; `nan_in`: a NaN at an active entry of that layer's kernel."""
  masks = {id(kernel): mask for kernel, mask in _kernels_masks(model)}
  grads = []
  for v in model.trainable_variables:
    g = np.random.RandomState(100 * step + len(grads)).standard_normal(v.shape).astype("float32")
    if nan_in is not None and nan_in in v.name and id(v) in masks:
      g.flat[np.flatnonzero(masks[id(v)].numpy())[0]] = np.nan
    grads.append((tf.constant(g), v))
  return grads


@pytest.mark.parametrize("method", DYNAMIC)
def test_nan_gradient_at_an_update_step_leaves_that_layers_mask_and_state(method):
  model, optimizer = _sparse(method, keras.optimizers.SGD(0.01, momentum=0.9))
  optimizer.apply_gradients(_grads(model))  # step 0: a normal update (SNFS's EMA is now non-zero)
  wrappers = tfmot_rigl.sparse_wrappers(model)
  before = {w.layer.name: (w.pruning_vars[0][1].numpy().copy(), [v.numpy().copy() for v in w.state[0].values()])
            for w in wrappers}

  optimizer.apply_gradients(_grads(model, nan_in="fc1", step=1))  # step 1: fc1's gradient has a NaN

  fc1, fc2 = wrappers
  np.testing.assert_array_equal(fc1.pruning_vars[0][1].numpy(), before["fc1"][0])  # mask unchanged
  for value, old in zip(fc1.state[0].values(), before["fc1"][1]):
    np.testing.assert_array_equal(value.numpy(), old)  # the EMA is not poisoned
  assert int(fc1.skipped_updates.numpy()) == 1 and int(fc2.skipped_updates.numpy()) == 0
  assert not np.array_equal(fc2.pruning_vars[0][1].numpy(), before["fc2"][0])  # the finite layer still updates
  kernel, mask, _ = fc1.pruning_vars[0]
  assert np.all(kernel.numpy()[mask.numpy() == 0] == 0)  # the NaN never reaches an inactive weight
  _assert_exact_sparsity(model)

  # Its active weights are NaN now (plain SGD applied the NaN): later updates of fc1 are skipped, nnz stays exact.
  optimizer.apply_gradients(_grads(model, step=2))
  assert int(fc1.skipped_updates.numpy()) == 2
  _assert_exact_sparsity(model)


@pytest.mark.parametrize("method", DYNAMIC)
def test_under_loss_scaling_a_skipped_step_skips_every_mask_update(method):
  model, optimizer = _sparse(method, keras.mixed_precision.LossScaleOptimizer(keras.optimizers.SGD(0.01)))
  optimizer.apply_gradients(_grads(model))
  masks = [m.numpy().copy() for _, m in _kernels_masks(model)]
  kernels = [k.numpy().copy() for k, _ in _kernels_masks(model)]

  optimizer.apply_gradients(_grads(model, nan_in="fc1", step=1))  # the loss scale optimizer skips this step

  for (kernel, mask), old_mask, old_kernel in zip(_kernels_masks(model), masks, kernels):
    np.testing.assert_array_equal(mask.numpy(), old_mask)       # fc2's gradient was finite: unchanged all the same
    np.testing.assert_array_equal(kernel.numpy(), old_kernel)
  optimizer.apply_gradients(_grads(model, step=2))  # a finite step updates again
  assert any(not np.array_equal(m.numpy(), old) for (_, m), old in zip(_kernels_masks(model), masks))
  _assert_exact_sparsity(model)


def test_fit_wraps_an_unwrapped_compiled_optimizer_and_an_unsupported_one_is_named():
  model = tfmot_rigl.prune_sparse(_model(), "rigl", sparsity=0.6, total_steps=10)
  model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  x, y = _data()
  model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # the first step wraps it (custom loops: test_save_load)
  assert isinstance(model.optimizer, tfmot_rigl.keras.optimizer._SparseTrainingOptimizer)
  for wrapper in tfmot_rigl.sparse_wrappers(model):
    kernel, mask, _ = wrapper.pruning_vars[0]
    assert np.count_nonzero(kernel.numpy()[mask.numpy() == 0]) == 0
  model = tfmot_rigl.prune_sparse(_model(), "rigl", sparsity=0.6, total_steps=10)
  model.compile(keras.optimizers.Ftrl(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  with pytest.raises(ValueError, match="wrap_optimizer cannot drive sparse training with Ftrl"):
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)


def test_one_optimizer_cannot_drive_two_models():
  first = tfmot_rigl.prune_sparse(_model(), "rigl", sparsity=0.6, total_steps=10)
  second = tfmot_rigl.prune_sparse(_model(), "rigl", sparsity=0.6, total_steps=10)
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1), first)
  assert tfmot_rigl.wrap_optimizer(optimizer, first) is optimizer  # wrapping again for the same model is fine
  with pytest.raises(ValueError, match=f"already drives sparse training of model '{first.name}'"):
    tfmot_rigl.wrap_optimizer(optimizer, second)


def _fit(model, optimizer, steps=6):
  model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  x, y = _data(16 * steps)
  model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False)


@pytest.mark.parametrize("make_optimizer", [
    lambda: keras.optimizers.AdamW(0.01, weight_decay=0.1),             # decoupled weight decay
    lambda: keras.optimizers.SGD(0.05, momentum=0.9, weight_decay=0.1),
    lambda: lars.LARS(0.05, weight_decay_rate=1e-2),                     # Model Garden's LARS
], ids=["adamw", "sgd_weight_decay", "lars"])
def test_decaying_optimizers_keep_inactive_weights_exactly_zero(make_optimizer):
  model, optimizer = _sparse("rigl", make_optimizer())
  masks = [m.numpy().copy() for _, m in _kernels_masks(model)]
  _fit(model, optimizer)
  assert any(not np.array_equal(m.numpy(), old) for (_, m), old in zip(_kernels_masks(model), masks))
  _assert_exact_sparsity(model)


def test_model_garden_ema_averages_follow_the_masks():
  with tf.distribute.OneDeviceStrategy("/cpu:0").scope():  # Model Garden's trainers always run under a strategy
    model = tfmot_rigl.prune_sparse(_model(), _every_step("rigl", grow_init="random_normal"), sparsity=0.6,
                                    distribution="uniform", first_layer_dense=False)
    optimizer = ema_optimizer.ExponentialMovingAverage(keras.optimizers.legacy.SGD(0.05, momentum=0.9),
                                                       average_decay=0.9)
    optimizer.shadow_copy(model)
    tfmot_rigl.wrap_optimizer(optimizer, model)
    _fit(model, optimizer)
    _assert_exact_sparsity(model)
    optimizer.swap_weights()  # what Model Garden's trainer does before evaluation
    _assert_exact_sparsity(model)


def test_keras_use_ema_averages_follow_the_masks():
  model, optimizer = _sparse("set", keras.optimizers.SGD(0.05, use_ema=True, ema_momentum=0.9))
  _fit(model, optimizer)
  optimizer.finalize_variable_values(model.trainable_variables)  # fit's end: the weights become their averages
  _assert_exact_sparsity(model)


@pytest.fixture
def global_policy():
  yield keras.mixed_precision.set_global_policy
  keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("method", DYNAMIC)
def test_mixed_precision_trains_with_updates(policy, method, global_policy):
  global_policy(policy)  # as Model Garden's runtime.mixed_precision_dtype does
  optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
  if policy == "mixed_float16":
    optimizer = keras.mixed_precision.LossScaleOptimizer(optimizer)
  model, optimizer = _sparse(method, optimizer)
  masks = [m.numpy().copy() for _, m in _kernels_masks(model)]
  _fit(model, optimizer)
  assert model.layers[1].compute_dtype == policy.removeprefix("mixed_")
  assert any(not np.array_equal(m.numpy(), old) for (_, m), old in zip(_kernels_masks(model), masks))
  _assert_exact_sparsity(model)


def test_skipped_updates_are_summarised_and_logged_once(tmp_path, caplog):
  from tfmot_rigl.keras import monitoring
  model, optimizer = _sparse("rigl", keras.optimizers.SGD(0.01))
  monitor = monitoring.MaskMonitor(model, 0)
  optimizer.apply_gradients(_grads(model, nan_in="fc1"))
  optimizer.apply_gradients(_grads(model, nan_in="fc1", step=1))
  with caplog.at_level("WARNING"):
    monitor.observe(1)
    monitor.observe(2)
  assert monitor.skipped == {"fc1": 2, "fc2": 0}
  assert [r.getMessage() for r in caplog.records].count(next(
      r.getMessage() for r in caplog.records if "'fc1' was skipped" in r.getMessage())) == 1
  writer = tf.summary.create_file_writer(str(tmp_path))
  monitoring.write_mask_summaries(writer, 2, monitor.masks, (), monitor.skipped)
  tags = {value.tag for path in tmp_path.iterdir() for event in tf.compat.v1.train.summary_iterator(str(path))
          for value in event.summary.value}
  assert "mask_update/skipped/fc1" in tags and "mask_update/skipped/fc2" not in tags


def test_non_finite_initial_acc_scale_is_refused_in_the_python_api():
  from tfmot_rigl.modelgarden import configs
  with pytest.raises(ValueError, match="initial_acc_scale=nan must be a finite number"):
    tfmot_rigl.RigL(initial_acc_scale=float("nan"))
  config = configs.SparsityConfig(method="rigl", initial_acc_scale=float("nan"))
  with pytest.raises(ValueError, match="task.sparsity: RigL initial_acc_scale"):
    config.validate()
