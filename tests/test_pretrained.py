"""Starting sparse training from a pretrained model: where the first masks come from (`initial_mask`).

A dense MLP trained on real MNIST is sparsified at 50 % by every mask-based method; before any training step,
magnitude-initialised masks keep its accuracy and random ones do not.
"""
import numpy as np
import pytest
import tensorflow as tf
import tf_keras as keras

import tfmot_rigl
from tfmot_rigl.data import mnist

# Both hidden layers at 50 % (uniform, first layer included), the 10-way head kept dense.
HALF = dict(sparsity=0.5, distribution="uniform", first_layer_dense=False, exclude=["logits"])


def _mlp():
  return keras.Sequential([keras.layers.Dense(300, activation="relu", input_shape=(784,), name="fc1"),
                           keras.layers.Dense(100, activation="relu", name="fc2"),
                           keras.layers.Dense(10, name="logits")])


@pytest.fixture(scope="module")
def trained_mlp():
  """784-300-100-10 trained 2 epochs on 20k MNIST images (~94 % test accuracy), and 2000 test images."""
  data = mnist.load_bundled_mnist()
  flat = lambda images: images.reshape(-1, 784).astype("float32") / 255.0
  keras.utils.set_random_seed(0)
  model = _mlp()
  model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  model.fit(flat(data["train_images"][:20000]), data["train_labels"][:20000], batch_size=100, epochs=2, verbose=0)
  return model, flat(data["test_images"][:2000]), data["test_labels"][:2000]


def _copy(model):
  copy = _mlp()
  copy.set_weights(model.get_weights())
  return copy


def _accuracy(model, images, labels):
  return float(np.mean(np.argmax(model(images, training=False).numpy(), axis=-1) == labels))


@pytest.mark.parametrize("method", ["rigl", "set", "static", "magnitude"])
def test_magnitude_start_keeps_pretrained_accuracy_and_random_does_not(trained_mlp, method):
  dense, images, labels = trained_mlp
  dense_accuracy = _accuracy(dense, images, labels)
  sparse = tfmot_rigl.prune_sparse(_copy(dense), method, initial_mask="magnitude", **HALF)
  wrappers = tfmot_rigl.sparse_wrappers(sparse)
  assert [w.layer.name for w in wrappers] == ["fc1", "fc2"]
  for wrapper, pretrained in zip(wrappers, (dense.layers[0].kernel, dense.layers[1].kernel)):
    kernel, mask = wrapper.layer.kernel.numpy(), wrapper.pruning_vars[0][1].numpy()
    assert mask.mean() == 0.5
    # The pretrained weights are kept where active, and they are the largest ones.
    np.testing.assert_array_equal(kernel, pretrained.numpy() * mask)
    assert np.abs(pretrained.numpy())[mask == 1].min() >= np.abs(pretrained.numpy())[mask == 0].max()
  magnitude_accuracy = _accuracy(sparse, images, labels)
  print(f"{method}: dense {dense_accuracy:.4f}, magnitude start {magnitude_accuracy:.4f}")
  assert dense_accuracy > 0.9
  assert magnitude_accuracy >= dense_accuracy - 0.02
  if method == "magnitude":
    return  # gradual magnitude pruning's own start (initial_mask=random) is dense: nothing to compare
  random_start = tfmot_rigl.prune_sparse(_copy(dense), method, **HALF)
  random_accuracy = _accuracy(random_start, images, labels)
  print(f"{method}: random start {random_accuracy:.4f}")
  assert random_accuracy < dense_accuracy - 0.05


def test_magnitude_start_in_blocks_keeps_the_blocks_of_largest_norm():
  layer = keras.layers.Dense(2, use_bias=False)
  layer.build((None, 4))
  # Blocks of 2 inputs x 1 output: l1 norms 3, 0.2 (column 0) and 0.5, 4 (column 1); the two largest stay.
  layer.kernel.assign([[1.0, 0.25], [2.0, 0.25], [0.1, 1.5], [0.1, 2.5]])
  model = keras.Sequential([keras.Input((4,)), layer])
  sparse = tfmot_rigl.prune_sparse(model, tfmot_rigl.RigL(block_shape=(2, 1)), sparsity=0.5,
                                   distribution="uniform", first_layer_dense=False, initial_mask="magnitude")
  mask = tfmot_rigl.sparse_wrappers(sparse)[0].pruning_vars[0][1].numpy()
  np.testing.assert_array_equal(mask, [[1, 0], [1, 0], [0, 1], [0, 1]])


def test_initial_mask_checks():
  model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(4)])
  with pytest.raises(ValueError, match="initial_mask='ones' is unknown; use one of random, magnitude, checkpoint"):
    tfmot_rigl.prune_sparse(model, "rigl", sparsity=0.5, initial_mask="ones")
  with pytest.raises(ValueError, match="does not apply to SNIP"):
    tfmot_rigl.prune_sparse(model, "snip", sparsity=0.5, initial_mask="magnitude")


def test_magnitude_initial_sparsity_is_tfmot_polynomial_decay_start():
  model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8)])
  sparse = tfmot_rigl.prune_sparse(model, tfmot_rigl.Magnitude(initial_sparsity=0.2, end_step=100), sparsity=0.8,
                                   distribution="uniform", first_layer_dense=False)
  schedule = tfmot_rigl.sparse_wrappers(sparse)[0].pruning_schedule
  assert (schedule.initial_sparsity, schedule.final_sparsity) == (0.2, 0.8)


def _tiny(units=6, classes=3):
  return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units, activation="relu", name="a"),
                           keras.layers.Dense(classes, name="b")])


@pytest.mark.parametrize("writer", ["checkpoint", "save_weights"])
def test_load_pretrained_reads_dense_checkpoints_into_a_sparse_model(tmp_path, writer):
  dense = _tiny()
  for index, variable in enumerate(dense.weights):
    variable.assign(tf.random.stateless_normal(variable.shape, [index, 1]) + 3.0)  # no zeros, all distinct
  path = str(tmp_path / "dense")
  if writer == "checkpoint":
    tf.train.Checkpoint(model=dense).write(path)
  else:
    dense.save_weights(path)
  sparse = tfmot_rigl.prune_sparse(_tiny(), "static", sparsity=0.5, distribution="uniform", first_layer_dense=False,
                                   initial_mask="magnitude")
  plan = tfmot_rigl.load_pretrained(sparse, path)
  assert "loaded 4 variables; first masks: magnitude" in plan.line()
  for wrapper, reference in zip(tfmot_rigl.sparse_wrappers(sparse), (dense.layers[0], dense.layers[1])):
    kernel, mask = wrapper.layer.kernel.numpy(), wrapper.pruning_vars[0][1].numpy()
    np.testing.assert_array_equal(kernel, reference.kernel.numpy() * mask)  # loaded, then masked by magnitude
    assert np.abs(reference.kernel.numpy())[mask == 1].min() >= np.abs(reference.kernel.numpy())[mask == 0].max()
    np.testing.assert_array_equal(wrapper.layer.bias.numpy(), reference.bias.numpy())


def test_load_pretrained_refuses_another_network_and_changes_nothing(tmp_path):
  path = str(tmp_path / "other")
  tf.train.Checkpoint(model=_tiny(units=5)).write(path)
  sparse = tfmot_rigl.prune_sparse(_tiny(), "rigl", sparsity=0.5, distribution="uniform", first_layer_dense=False)
  before = [w.numpy() for w in sparse.weights]
  with pytest.raises(tfmot_rigl.keras.PretrainedError, match=r"does not fit this model: a/kernel has shape \[4, 6\] "
                     r"here, \[4, 5\] in the checkpoint"):
    tfmot_rigl.load_pretrained(sparse, path)
  with pytest.raises(tfmot_rigl.keras.PretrainedError, match="does not exist"):
    tfmot_rigl.load_pretrained(sparse, str(tmp_path / "nowhere"))
  assert all(np.array_equal(a, w.numpy()) for a, w in zip(before, sparse.weights))


def test_checkpoint_masks_into_a_new_head_keep_the_loaded_layers_masks(tmp_path):
  half = dict(sparsity=0.5, distribution="uniform", first_layer_dense=False)
  source = tfmot_rigl.prune_sparse(_tiny(), "rigl", seed=1, **half)
  path = str(tmp_path / "sparse")
  tf.train.Checkpoint(model=source).write(path)
  target = tfmot_rigl.prune_sparse(_tiny(classes=5), "static", initial_mask="checkpoint", **half)
  head_mask = target.layers[1].pruning_vars[0][1].numpy()
  # Load the first layer only (its kernel, bias and mask), as init_checkpoint_modules=backbone does.
  tfmot_rigl.load_pretrained(target, path, required=target.layers[0].layer.weights)
  loaded, original = target.layers[0], source.layers[0]
  np.testing.assert_array_equal(loaded.pruning_vars[0][1].numpy(), original.pruning_vars[0][1].numpy())
  np.testing.assert_array_equal(loaded.layer.kernel.numpy(), original.layer.kernel.numpy())
  np.testing.assert_array_equal(target.layers[1].pruning_vars[0][1].numpy(), head_mask)  # the new head's own
