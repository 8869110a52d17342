"""LeNet-300-100 on real MNIST with RigL at 90% ERK: one epoch, clearly better than chance, sparsity 0.90 ± 0.005."""
import numpy as np
import tf_keras as keras

import tfmot_rigl
from tfmot_rigl.data import mnist


def test_lenet_300_100_rigl_erk_90_one_epoch_on_real_mnist():
  keras.utils.set_random_seed(0)
  batch_size = 100
  train = mnist.mnist_dataset("train").shuffle(10000, seed=0).batch(batch_size, drop_remainder=True)
  test = mnist.mnist_dataset("test").batch(1000)
  steps = 60000 // batch_size

  inputs = keras.Input((28, 28, 1))
  x = keras.layers.Flatten()(inputs)
  x = keras.layers.Dense(300, activation="relu", name="fc1")(x)
  x = keras.layers.Dense(100, activation="relu", name="fc2")(x)
  dense = keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))

  model = tfmot_rigl.prune_sparse(dense, tfmot_rigl.RigL(update_frequency=100), sparsity=0.9, distribution="erk",
                                  seed=0, total_steps=steps)
  optimizer = tfmot_rigl.wrap_optimizer(keras.optimizers.SGD(0.1, momentum=0.9), model)
  model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
  initial_masks = [w.pruning_vars[0][1].numpy().copy() for w in tfmot_rigl.sparse_wrappers(model)]
  model.fit(train, epochs=1, verbose=0)

  _, accuracy = model.evaluate(test, verbose=0)
  assert accuracy > 0.9, accuracy  # chance is 0.1
  masks = [w.pruning_vars[0][1].numpy() for w in tfmot_rigl.sparse_wrappers(model)]
  sparsity = sum(m.size - m.sum() for m in masks) / sum(m.size for m in masks)
  assert abs(sparsity - 0.90) <= 0.005, sparsity
  assert any(not np.array_equal(a, b) for a, b in zip(initial_masks, masks))  # RigL really moved connections
