"""Test setup: TFMOT needs Keras 2 (tf_keras), selected before TensorFlow is first imported."""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Two logical CPU devices so MirroredStrategy tests can run two replicas on this CPU-only machine; they must be
# configured before any op runs, so it happens here, once for the whole session.
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])

import logging  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture
def library_notes_shown():
  """The tool's notes print at INFO, as for an API user (an in-process `tfm` command earlier may not leave them so)."""
  notes = logging.getLogger("tfmot_rigl")
  level = notes.level
  notes.setLevel(logging.INFO)
  yield
  notes.setLevel(level)
