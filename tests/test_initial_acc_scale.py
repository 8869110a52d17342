"""`initial_acc_scale` moves a grown weight downhill for every supported optimizer (issue 19): the first update of a
new connection goes against its gradient, further than without the knob where the optimizer has a momentum slot."""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfmot_rigl

OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.9),
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.004),
    "rmsprop": lambda: keras.optimizers.RMSprop(0.01),
    "rmsprop_momentum": lambda: keras.optimizers.RMSprop(0.01, momentum=0.9),
    "legacy_sgd_momentum": lambda: keras.optimizers.legacy.SGD(0.1, momentum=0.9),
    "legacy_adam": lambda: keras.optimizers.legacy.Adam(0.01),
    "legacy_rmsprop_momentum": lambda: keras.optimizers.legacy.RMSprop(0.01, momentum=0.9),
}
HAS_MOMENTUM_SLOT = {"sgd_momentum", "sgd_nesterov", "adam", "adamw", "rmsprop_momentum", "legacy_sgd_momentum",
                     "legacy_adam", "legacy_rmsprop_momentum"}


def _first_update_of_grown_weights(make_optimizer, scale):
  """(gradient, change of each new connection's weight at the step after it was grown) for one Dense kernel."""
  keras.utils.set_random_seed(0)
  inputs = keras.Input((8,))
  model = keras.Model(inputs, keras.layers.Dense(8, use_bias=False, name="fc")(inputs))
  algorithm = tfmot_rigl.RigL(initial_acc_scale=scale, drop_fraction=0.5, begin_step=0, end_step=0,
                              update_frequency=1, drop_fraction_anneal="constant")
  model = tfmot_rigl.prune_sparse(model, algorithm, sparsity=0.5, distribution="uniform", first_layer_dense=False)
  optimizer = tfmot_rigl.wrap_optimizer(make_optimizer(), model)
  kernel, mask, _ = tfmot_rigl.sparse_wrappers(model)[0].pruning_vars[0]
  grad = tf.constant(np.random.RandomState(1).randn(8, 8).astype("float32"))
  before = mask.numpy().copy()
  optimizer.apply_gradients([(grad, kernel)])  # step 0: the update grows connections (at zero)
  new = (mask.numpy() > 0) & (before == 0)
  assert new.sum() > 0 and not kernel.numpy()[new].any()
  start = kernel.numpy().copy()
  optimizer.apply_gradients([(grad, kernel)])  # step 1: their first update
  return grad.numpy()[new], (kernel.numpy() - start)[new]


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_first_update_of_a_grown_weight_goes_downhill(name):
  grad, moved = _first_update_of_grown_weights(OPTIMIZERS[name], scale=1.0)
  assert np.all(np.isfinite(moved)), name
  assert np.all(np.sign(moved) == -np.sign(grad)), f"{name}: a grown weight moved uphill"
  _, plain = _first_update_of_grown_weights(OPTIMIZERS[name], scale=0.0)
  if name in HAS_MOMENTUM_SLOT:  # the knob's momentum adds to the step, in the same direction
    assert np.all(np.abs(moved) > np.abs(plain) * 1.05), name
  else:  # nothing to seed: second moments stay zero, the update is the plain one
    np.testing.assert_allclose(moved, plain, rtol=1e-6)
