"""Report rows are told apart by block, and `tfm report` says which conv/dense kernels stay dense and why."""
import re

import tf_keras as keras

import tfmot_rigl
from tfmot_rigl.cli import main as tfm


class Block(keras.layers.Layer):
  """Like Model Garden's residual blocks: every block names its own layers the same way."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.conv = keras.layers.Conv2D(4, 3, padding="same", name="conv2d")
    self.proj = keras.layers.Conv2D(4, 1, name="conv2d_1")

  def call(self, x):
    return self.proj(self.conv(x))


def test_rows_named_by_block_and_kernel():
  inputs = keras.Input((8, 8, 4))
  x = Block(name="block_a")(inputs)
  x = Block(name="block_b")(x)
  model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(x)))
  names = [row["name"] for row in tfmot_rigl.report(model)["layers"] if row["kind"] in ("conv", "dense")]
  assert names == ["block_a/conv2d", "block_a/conv2d_1", "block_b/conv2d", "block_b/conv2d_1", "head"]


def test_tfm_report_names_the_kernels_left_dense(capsys):
  assert tfm.main(["report", "--experiment=mnist_rigl"]) == 0
  out = capsys.readouterr().out
  line = [line for line in out.splitlines() if "left dense" in line]
  assert len(line) == 1 and re.fullmatch(  # the head's Keras name depends on the models built before in this process
      r"1 of 3 conv/dense kernels left dense: 1 sparsity 0 from the erk distribution \(small or first layer\), "
      r"custom_sparsities or exclude \[dense(_\d+)?\]\.", line[0]), out
  assert tfm.main(["report", "--experiment=mnist_rigl", "--json"]) == 0
  assert '"left_dense": {' in capsys.readouterr().out
