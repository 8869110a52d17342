"""Every tf_keras optimizer, legacy ones included, keeps inactive weights exactly zero or is refused by name (#21)."""
import inspect

import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfmot_rigl


def _optimizer_classes():
  found = {}
  for module in (keras.optimizers, keras.optimizers.experimental, keras.optimizers.legacy):
    for value in vars(module).values():
      if (inspect.isclass(value) and issubclass(value, (keras.optimizers.Optimizer, keras.optimizers.legacy.Optimizer))
          and value not in (keras.optimizers.Optimizer, keras.optimizers.legacy.Optimizer)):
        found[f"{value.__module__}.{value.__name__}"] = value
  return found


OPTIMIZERS = _optimizer_classes()
REFUSED = {"Ftrl", "Adafactor"}  # they set weights (or keep slots) outside the masked-gradient step


def test_the_sweep_covers_every_optimizer():
  names = {cls.__name__ for cls in OPTIMIZERS.values()}
  assert {"SGD", "Adam", "AdamW", "Ftrl", "Adafactor", "Lion", "Nadam", "Adadelta"} <= names
  assert sum(issubclass(c, keras.optimizers.legacy.Optimizer) for c in OPTIMIZERS.values()) >= 8


def _kwargs(cls):
  """Shrinkage and decoupled weight decay on where the optimizer has them: what could move an inactive weight."""
  params = inspect.signature(cls.__init__).parameters
  extra = {"learning_rate": 0.05}
  if "weight_decay" in params and not issubclass(cls, keras.optimizers.legacy.Optimizer):
    extra["weight_decay"] = 0.1
  if "l2_shrinkage_regularization_strength" in params:
    extra.update(l2_shrinkage_regularization_strength=0.1, l1_regularization_strength=0.01)
  return extra


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_keeps_inactive_weights_zero_or_is_refused(name):
  cls = OPTIMIZERS[name]
  keras.utils.set_random_seed(0)
  model = tfmot_rigl.prune_sparse(
      keras.Sequential([keras.layers.Dense(12, activation="tanh", input_shape=(6,)), keras.layers.Dense(3)]),
      tfmot_rigl.RigL(update_frequency=2, drop_fraction=0.5), sparsity=0.7, first_layer_dense=False, total_steps=6)
  optimizer = cls(**_kwargs(cls))
  if cls.__name__ in REFUSED:
    with pytest.raises(ValueError, match=rf"wrap_optimizer cannot drive sparse training with {cls.__name__}"):
      tfmot_rigl.wrap_optimizer(optimizer, model)
    return
  tfmot_rigl.wrap_optimizer(optimizer, model)
  rng = np.random.RandomState(0)
  x, y = tf.constant(rng.randn(16, 6).astype("float32")), tf.constant(rng.randint(0, 3, 16))
  masks = [mask.numpy().copy() for w in tfmot_rigl.sparse_wrappers(model) for _, mask, _ in w.pruning_vars]
  for _ in range(6):  # eager steps; mask updates at steps 0, 2 and 4 (drop resets slots, grow starts connections)
    with tf.GradientTape() as tape:
      loss = keras.losses.sparse_categorical_crossentropy(y, model(x, training=True), from_logits=True)
    variables = model.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
  moved = False
  for wrapper, before in zip(tfmot_rigl.sparse_wrappers(model), masks):
    kernel, mask, _ = wrapper.pruning_vars[0]
    assert np.count_nonzero(kernel.numpy()[mask.numpy() == 0]) == 0, name
    assert np.all(np.isfinite(kernel.numpy())), name
    moved |= not np.array_equal(before, mask.numpy())
  assert moved
