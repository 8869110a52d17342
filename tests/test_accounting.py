"""The paper's accounting, checked against counts done by hand on tiny layers.

Inference FLOPs follow micronet_challenge/counting.py: an output element of a conv/dense layer is a dot product of
length L = fan_in · density, costing L multiplies and L − 1 adds; a bias (or a folded batch norm) adds 1 add; ReLU
costs 1 multiply per element.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_model_optimization as tfmot  # noqa: E402
import tf_keras as keras  # noqa: E402
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper  # noqa: E402

from tfmot_rigl.core import accounting  # noqa: E402
from tfmot_rigl.keras import accounting as keras_accounting  # noqa: E402

LayerOp = accounting.LayerOp


# --- inference FLOPs of single layers -------------------------------------------------------------------------------

def test_dense_conv2d_with_bias_and_relu():
  # 3×3 kernel, 2 → 4 channels, 8×8 output: 256 outputs, each 18 mults + 17 adds, +1 bias add, +1 ReLU mult.
  op = LayerOp("conv", "conv", (8, 8, 4), kernel_shape=(3, 3, 2, 4), has_bias=True, activation="relu")
  count = accounting.count_op(op)
  assert (count.mults, count.adds) == (256 * (18 + 1), 256 * (17 + 1))
  assert count.flops == 256 * 37
  assert count.param_bits == (72 + 4) * 32


def test_half_sparse_conv2d_counts_only_nonzeros():
  # counting.py: vector length 18 · 0.5 = 9 → 9 mults and 8 adds per output element.
  op = LayerOp("conv", "conv", (8, 8, 4), kernel_shape=(3, 3, 2, 4), nonzeros=36)
  count = accounting.count_op(op)
  assert (count.mults, count.adds) == (9 * 256, 8 * 256)
  # Sparse kernel: 36 values of 32 bits plus a 1-bit mask over all 72 entries.
  assert count.param_bits == 36 * 32 + 72
  dense = accounting.count_op(op, dense=True)
  assert (dense.mults, dense.adds, dense.param_bits) == (18 * 256, 17 * 256, 72 * 32)


def test_depthwise_conv2d():
  # 3×3 depthwise on 4 channels, stride 2 → 4×4×4 = 64 outputs; each a 9-long dot product plus a bias add.
  op = LayerOp("dw", "depthwise", (4, 4, 4), kernel_shape=(3, 3, 4, 1), has_bias=True)
  count = accounting.count_op(op)
  assert (count.mults, count.adds) == (9 * 64, 8 * 64 + 64)
  assert count.param_bits == (36 + 4) * 32


def test_sparse_dense_layer():
  # 10 → 5 with 20 of 50 weights kept: vector length 4 per output; 5 outputs.
  op = LayerOp("fc", "dense", (5,), kernel_shape=(10, 5), nonzeros=20, has_bias=True)
  count = accounting.count_op(op)
  assert (count.mults, count.adds) == (4 * 5, 3 * 5 + 5)
  assert count.param_bits == 20 * 32 + 50 + 5 * 32


def test_folded_batch_norm_is_a_bias_and_unfolded_one_is_scale_plus_add():
  folded = LayerOp("conv", "conv", (8, 8, 4), kernel_shape=(1, 1, 2, 4), folded_bn=True)
  count = accounting.count_op(folded)
  assert (count.mults, count.adds, count.param_bits) == (2 * 256, 1 * 256 + 256, (8 + 4) * 32)
  unfolded = accounting.count_op(LayerOp("bn", "batch_norm", (4, 4, 8)))
  assert (unfolded.mults, unfolded.adds, unfolded.param_bits) == (128, 128, 2 * 8 * 32)


def test_pooling_add_and_activations():
  gap = accounting.count_op(LayerOp("gap", "global_avg_pool", (8,), input_shape=(4, 4, 8)))
  assert (gap.mults, gap.adds) == (8, 15 * 8)  # one division and 15 additions per channel
  add = accounting.count_op(LayerOp("add", "add", (4, 4, 8), num_inputs=3))
  assert (add.mults, add.adds) == (0, 2 * 128)
  swish = accounting.count_op(LayerOp("act", "activation", (10,), activation="swish"))
  assert (swish.mults, swish.adds) == (30, 10)
  sigmoid = accounting.count_op(LayerOp("act", "activation", (10,), activation="sigmoid"))
  assert (sigmoid.mults, sigmoid.adds) == (20, 10)
  with pytest.raises(ValueError, match="tanh"):
    LayerOp("act", "activation", (10,), activation="tanh")


def test_model_size_and_ratios_in_report():
  ops = [LayerOp("conv", "conv", (8, 8, 4), kernel_shape=(3, 3, 2, 4), nonzeros=36, has_bias=True),
         LayerOp("fc", "dense", (5,), kernel_shape=(256, 5), has_bias=True)]
  sparse_bits = (36 * 32 + 72 + 4 * 32) + (1280 + 5) * 32
  dense_bits = (72 + 4) * 32 + (1280 + 5) * 32
  assert accounting.model_size_bits(ops) == sparse_bits
  assert accounting.model_size_bits(ops, dense=True) == dense_bits
  report = accounting.build_report(ops)
  totals = report["totals"]
  f_sparse = 9 * 256 + 9 * 256 + (1280 + 1280)   # conv: 9 mults, 8+1 adds per output; fc: 256 mults, 255+1 adds ×5
  f_dense = 18 * 256 + 18 * 256 + (1280 + 1280)
  assert (totals["flops"], totals["dense_flops"]) == (f_sparse, f_dense)
  assert totals["flops_ratio"] == pytest.approx(f_sparse / f_dense)
  assert totals["size_bytes"] == sparse_bits / 8
  assert totals["size_ratio"] == pytest.approx(sparse_bits / dense_bits)
  assert totals["kernel_sparsity"] == pytest.approx(36 / (72 + 1280))
  assert "training" not in report
  assert "| conv | conv | 3×3×2×4 |" in accounting.render_markdown(report)


def test_sparsity_to_nonzeros_matches_the_masks():
  # floor(s·N) zeros, as tfmot_rigl.core.masks.random_mask makes.
  assert accounting.sparse_kernel_nonzeros(72, 0.5) == 36
  assert accounting.sparse_kernel_nonzeros(10, 0.9) == 1
  assert accounting.sparse_kernel_nonzeros(7, 0.5) == 4


# --- training FLOPs --------------------------------------------------------------------------------------------------

F_SPARSE, F_DENSE, STEPS, BATCH = 100.0, 1000.0, 1000, 10


@pytest.mark.parametrize("method, per_example", [
    ("dense", 3 * F_DENSE),
    ("static", 3 * F_SPARSE),
    ("set", 3 * F_SPARSE),
    ("snip", 3 * F_SPARSE),
    ("snfs", 2 * F_SPARSE + F_DENSE),
    ("rigl", (3 * F_SPARSE * 100 + 2 * F_SPARSE + F_DENSE) / 101),
])
def test_training_flops_formulas(method, per_example):
  got = accounting.training_flops_per_example(method, F_SPARSE, F_DENSE, update_frequency=100)
  assert got == pytest.approx(per_example)
  total = accounting.training_flops(method, F_SPARSE, F_DENSE, STEPS, BATCH, update_frequency=100)
  one_shot = 3 * F_DENSE * BATCH if method == "snip" else 0.0  # SNIP's scores: one dense batch before training
  assert total == pytest.approx(per_example * STEPS * BATCH + one_shot)


def test_rigl_update_frequency_and_extended_training():
  per_example = (3 * F_SPARSE * 10 + 2 * F_SPARSE + F_DENSE) / 11
  total = accounting.training_flops("rigl", F_SPARSE, F_DENSE, STEPS, BATCH, update_frequency=10, multiplier=5)
  assert total == pytest.approx(per_example * 5 * STEPS * BATCH)


def test_magnitude_pruning_is_three_dense_forwards_times_mean_density():
  # Linear schedule (power 1) from step 2 to 6, pruning every 2 steps, 10 steps: the fraction of the final sparsity
  # is 0 at steps 0-3, 0.5 at steps 4-5, 1 at steps 6-9 → mean 0.5.
  fraction = accounting.magnitude_mean_pruned_fraction(10, begin_step=2, end_step=6, frequency=2, power=1)
  assert fraction == pytest.approx(0.5)
  # f_S = 0.1 f_D (90% sparse): mean density 1 − 0.9 · 0.5 = 0.55.
  got = accounting.training_flops_per_example("magnitude", F_SPARSE, F_DENSE, steps=10, begin_step=2, end_step=6,
                                              update_frequency=2, power=1)
  assert got == pytest.approx(3 * F_DENSE * 0.55)
  # Fractions of training resolve against the steps: 0.2 → 2, 0.6 → 6.
  assert accounting.magnitude_mean_pruned_fraction(10, 0.2, 0.6, 2, 1) == pytest.approx(0.5)


def test_magnitude_mean_matches_tfmot_polynomial_decay():
  steps, begin, end, frequency, final = 1000, 100, 730, 50, 0.8
  schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, final, begin, end, power=3, frequency=frequency)
  should_prune, sparsity = schedule(tf.range(steps, dtype=tf.int64))
  current, total = 0.0, 0.0
  for prune, value in zip(should_prune.numpy(), sparsity.numpy()):
    current = value if prune else current  # TFMOT keeps the last mask between pruning steps
    total += current
  expected = total / steps / final
  got = accounting.magnitude_mean_pruned_fraction(steps, begin, end, frequency, power=3)
  assert got == pytest.approx(expected, rel=1e-5)
  assert 0.0 < got < 1.0


def test_training_flops_rejects_unknown_method():
  with pytest.raises(ValueError, match="Unknown training method 'lottery'"):
    accounting.training_flops_per_example("lottery", 1.0, 2.0)


# --- Keras models -----------------------------------------------------------------------------------------------------

def _tiny_model(wrap_conv: bool):
  conv = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv")
  if wrap_conv:
    conv = tfmot.sparsity.keras.prune_low_magnitude(
        conv, pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0))
  inputs = keras.Input((8, 8, 2))
  x = conv(inputs)
  x = keras.layers.BatchNormalization(name="bn")(x)
  x = keras.layers.ReLU(name="relu")(x)
  x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(x)
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  outputs = keras.layers.Dense(3, activation="softmax", name="fc")(x)
  return keras.Model(inputs, outputs)


# By hand: conv 36 of 72 weights kept, 256 outputs: 9 mults + 8 adds + 1 folded-BN add each → 4608.
# ReLU: 256 mults. Depthwise: 64 outputs × (9 + 8 + 1) → 1152. GAP over 4×4×4: 4 + 15·4 → 64.
# fc 4→3: 3 × (4 + 3 + 1) → 24.
TINY_SPARSE_FLOPS = 4608 + 256 + 1152 + 64 + 24
TINY_DENSE_FLOPS = 256 * (18 + 17 + 1) + 256 + 1152 + 64 + 24
TINY_SPARSE_BITS = (36 * 32 + 72 + 4 * 32) + (36 + 4) * 32 + (12 + 3) * 32


def test_describe_model_reads_the_tfmot_mask_and_folds_batch_norm():
  model = _tiny_model(wrap_conv=True)
  wrapper = model.layers[1]
  assert isinstance(wrapper, pruning_wrapper.PruneLowMagnitude)
  mask = np.zeros((3, 3, 2, 4), np.float32)
  mask.reshape(-1)[::2] = 1.0  # 36 of 72 kept
  wrapper.pruning_vars[0][1].assign(mask)

  ops = keras_accounting.describe_model(model)
  assert [(op.name, op.kind) for op in ops] == [
      ("conv", "conv"), ("relu", "activation"), ("dw", "depthwise"), ("gap", "global_avg_pool"), ("fc", "dense")]
  conv = ops[0]
  assert (conv.nonzeros, conv.folded_bn, conv.output_shape) == (36, True, (8, 8, 4))
  assert ops[2].output_shape == (4, 4, 4) and ops[2].nonzeros is None
  counts, total = accounting.inference_flops(ops)
  assert [c.flops for c in counts] == [4608, 256, 1152, 64, 24]
  assert total == TINY_SPARSE_FLOPS
  assert accounting.model_size_bits(ops) == TINY_SPARSE_BITS


def test_report_from_a_plain_model_and_per_layer_sparsities_matches_the_wrapped_one():
  model = _tiny_model(wrap_conv=False)
  report = keras_accounting.report(model, "rigl", steps=1000, batch_size=8, sparsities={"conv": 0.5},
                                   update_frequency=100)
  totals = report["totals"]
  assert (totals["flops"], totals["dense_flops"]) == (TINY_SPARSE_FLOPS, TINY_DENSE_FLOPS)
  assert totals["size_bits"] == TINY_SPARSE_BITS
  per_example = (3 * TINY_SPARSE_FLOPS * 100 + 2 * TINY_SPARSE_FLOPS + TINY_DENSE_FLOPS) / 101
  training = report["training"]
  assert training["total_flops"] == pytest.approx(per_example * 1000 * 8)
  assert training["flops_ratio"] == pytest.approx(per_example / (3 * TINY_DENSE_FLOPS))
  assert "| conv | conv |" in accounting.render_markdown(report)
  with pytest.raises(ValueError, match="unknown layer"):
    keras_accounting.describe_model(model, sparsities={"no_such_layer": 0.5})


def test_nested_blocks_residual_add_unfolded_batch_norm_and_zero_weights():
  block_in = keras.Input((4, 4, 2))
  block = keras.Model(block_in, keras.layers.Conv2D(2, 1, name="inner", activation="relu")(block_in), name="block")
  inputs = keras.Input((4, 4, 2))
  x = keras.layers.Add(name="add")([inputs, block(inputs)])
  x = keras.layers.BatchNormalization(name="bn")(x)  # reads an Add: cannot be folded
  x = keras.layers.Flatten()(x)
  fc = keras.layers.Dense(2, use_bias=False, name="fc")
  model = keras.Model(inputs, fc(x))
  kernel = np.ones((32, 2), np.float32)
  kernel[:8] = 0.0  # an unwrapped (e.g. stripped) kernel with exact zeros counts as sparse
  fc.kernel.assign(kernel)

  ops = keras_accounting.describe_model(model)
  assert [(op.name, op.kind) for op in ops] == [
      ("inner", "conv"), ("add", "add"), ("bn", "batch_norm"), ("fc", "dense")]
  assert ops[3].nonzeros == 48
  counts, _ = accounting.inference_flops(ops)
  # inner 1×1 conv 2→2 on 16 positions with bias and ReLU: 32 outputs × (2 + 1 mults, 1 + 1 adds).
  # add: 32 adds. bn: 32 mults + 32 adds. fc: 24 nonzeros per output on average → 2 × (24 + 23).
  assert [(c.mults, c.adds) for c in counts] == [(96, 64), (0, 32), (32, 32), (48, 46)]


def test_tfmot_rigl_wrapped_model_matches_a_report_from_the_distribution_alone():
  import tfmot_rigl  # the package API; imported here so the core tests above need only the core
  inputs = keras.Input((8, 8, 3))
  x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
  x = keras.layers.BatchNormalization(name="bn")(x)
  x = keras.layers.SeparableConv2D(16, 3, strides=2, padding="same", name="sep")(x)
  x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
  model = keras.Model(inputs, keras.layers.Dense(10, name="fc")(x))
  algorithm = tfmot_rigl.RigL(update_frequency=50)
  sparse = tfmot_rigl.prune_sparse(model, algorithm=algorithm, sparsity=0.8, distribution="erk", total_steps=1000)

  traced = keras_accounting.describe_model(sparse)
  assert [op.name for op in traced] == ["stem", "sep/depthwise", "sep/pointwise", "gap", "fc"]
  masks = {w.layer.name: w.pruning_vars[0][1].numpy() for w in tfmot_rigl.sparse_wrappers(sparse)}
  assert traced[0].nonzeros == np.count_nonzero(masks["stem"]) and traced[0].folded_bn
  assert traced[2].nonzeros == np.count_nonzero(masks["sep"])  # the pointwise kernel is the sparsified one
  assert traced[1].nonzeros is None

  shapes = {name: mask.shape for name, mask in masks.items()}
  planned = keras_accounting.describe_model(model, sparsities=tfmot_rigl.layer_sparsities(shapes, 0.8, "erk"))
  assert [op.nonzeros for op in planned] == [op.nonzeros for op in traced]
  report = keras_accounting.report(sparse, algorithm, steps=100, batch_size=4)  # ΔT taken from the algorithm
  f_sparse, f_dense = report["totals"]["flops"], report["totals"]["dense_flops"]
  assert report["training"]["flops_per_example"] == pytest.approx((3 * f_sparse * 50 + 2 * f_sparse + f_dense) / 51)


def test_model_without_known_input_shape_asks_for_one():
  model = keras.Sequential([keras.layers.Dense(4, name="fc")])
  with pytest.raises(ValueError, match="pass input_shape"):
    keras_accounting.describe_model(model)
  ops = keras_accounting.describe_model(model, input_shape=(6,))
  assert [(op.name, op.kernel_shape) for op in ops] == [("fc", (6, 4))]


def test_block_made_prunable_as_a_whole_counts_its_own_layers_with_the_wrapper_masks():
  class Block(keras.layers.Layer, tfmot.sparsity.keras.PrunableLayer):
    def __init__(self, **kwargs):
      super().__init__(**kwargs)
      self.conv_a = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="conv_a")
      self.conv_b = keras.layers.Conv2D(4, 1, use_bias=False, name="conv_b")

    def build(self, input_shape):  # TFMOT asks for the prunable weights right after building the block
      with tf.name_scope("conv_a"):  # unique weight names ("block/conv_a/kernel"), as tfmot_rigl names them
        self.conv_a.build(input_shape)
      with tf.name_scope("conv_b"):
        self.conv_b.build(tuple(input_shape[:-1]) + (4,))
      super().build(input_shape)

    def call(self, x):
      return self.conv_b(self.conv_a(x))

    def get_prunable_weights(self):
      return [self.conv_a.kernel, self.conv_b.kernel]

  inputs = keras.Input((4, 4, 2))
  wrapped = tfmot.sparsity.keras.prune_low_magnitude(
      Block(name="block"), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0))
  model = keras.Model(inputs, wrapped(inputs))
  (kernel_a, mask_a, _), (_, mask_b, _) = wrapped.pruning_vars
  mask_a.assign(np.where(np.arange(72).reshape(3, 3, 2, 4) < 18, 1.0, 0.0))  # 18 of 72 kept
  ops = keras_accounting.describe_model(model)
  assert [(op.name, op.nonzeros) for op in ops] == [("conv_a", 18), ("conv_b", None)]
  # 16 positions × 4 channels: conv_a 18·16 mults, 18·16 − 64 adds; conv_b dense 1×1 4→4: 16·16 mults, 16·16 − 64.
  counts, _ = accounting.inference_flops(ops)
  assert [(c.mults, c.adds) for c in counts] == [(288, 224), (256, 192)]
  # A planned sparsity may name a block's kernel as tfmot_rigl.model_sparsities does: "block/<weight>".
  key = "block/" + kernel_a.name.split(":")[0].removeprefix("block/")
  planned = keras_accounting.describe_model(model, sparsities={key: 0.75, "conv_b": 0.5})
  assert [op.nonzeros for op in planned] == [18, 8]
