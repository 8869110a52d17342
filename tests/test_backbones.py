"""Model Garden backbones: WideResNet for CIFAR-10 and the MNIST MLP (784-300-100-10)."""
import numpy as np
import pytest
import tensorflow_model_optimization as tfmot
import tf_keras as keras
from official.vision.configs import backbones as stock_backbones
from official.vision.configs import common
from official.vision.configs import image_classification
from official.vision.modeling import backbones as mg_backbones
from official.vision.modeling import factory as model_factory
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl.modelgarden import backbones

CIFAR = keras.layers.InputSpec(shape=[None, 32, 32, 3])
MNIST = keras.layers.InputSpec(shape=[None, 28, 28, 1])


def _classifier(input_specs, backbone_config, num_classes=10):
  model_config = image_classification.ImageClassificationModel(num_classes=num_classes, backbone=backbone_config)
  return model_factory.build_classification_model(input_specs, model_config)


def _num_trainable(model):
  return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def _layers_of(model, layer_type):
  return [layer for layer in model.layers if type(layer) is layer_type]  # pylint: disable=unidiomatic-typecheck


def test_wrn_22_2_structure_parameters_and_output_shape():
  config = backbones.SparseBackbone(type="wide_resnet")  # defaults: depth 22, width 2
  model = _classifier(CIFAR, config)
  backbone = model.backbone
  convs = _layers_of(backbone, keras.layers.Conv2D)
  # 3 groups x 3 blocks x 2 convs, the stem, and one 1x1 projection per group (16 -> 32 channels changes in group 1).
  assert len(convs) == 1 + 3 * 3 * 2 + 3
  assert len(_layers_of(backbone, keras.layers.Add)) == 9
  assert [c.kernel.shape[-1] for c in convs if c.name.endswith("_conv2")] == [32] * 3 + [64] * 3 + [128] * 3
  assert [c.name for c in convs if c.strides == (2, 2)] == [
      "group2_block1_conv1", "group2_block1_shortcut", "group3_block1_conv1", "group3_block1_shortcut"]
  assert all(not c.use_bias for c in convs)
  # Conv kernels: 432 + 51,200 + 204,800 + 819,200 (by hand); plus BN gamma/beta and the 128x10 head.
  assert sum(int(np.prod(c.kernel.shape)) for c in convs) == 1_075_632
  assert _num_trainable(model) == 1_079_642

  assert {level: spec.as_list() for level, spec in backbone.output_specs.items()} == {
      "0": [None, 32, 32, 32], "1": [None, 16, 16, 64], "2": [None, 8, 8, 128]}
  logits = model(np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype(np.float32), training=False)
  assert logits.shape == (2, 10)
  assert np.all(np.isfinite(logits.numpy()))


def test_wrn_16_8_matches_the_wrn_paper_parameter_count():
  model = _classifier(CIFAR, backbones.SparseBackbone(
      type="wide_resnet", wide_resnet=backbones.WideResNet(depth=16, width_multiplier=8)))
  assert round(_num_trainable(model) / 1e6, 1) == 11.0  # Zagoruyko & Komodakis 2016, Table 1


def test_wrn_16_1_tiny_build_with_dropout_and_l2():
  l2 = keras.regularizers.L2(5e-4)
  backbone = backbones.WideResNetBackbone(depth=16, width_multiplier=1, dropout_rate=0.3, kernel_regularizer=l2,
                                          input_specs=keras.layers.InputSpec(shape=[None, 8, 8, 3]))
  convs = _layers_of(backbone, keras.layers.Conv2D)
  # Group 1 keeps the stem's 16 channels, so its first block has an identity shortcut: only groups 2, 3 project.
  assert len(convs) == 1 + 3 * 2 * 2 + 2
  assert len(_layers_of(backbone, keras.layers.Dropout)) == 3 * 2
  assert all(c.kernel_regularizer is l2 for c in convs)
  assert len(backbone.losses) == len(convs)  # one L2 term per conv kernel
  outputs = backbone(np.ones((2, 8, 8, 3), np.float32))
  assert outputs["2"].shape == (2, 2, 2, 64)
  assert float(keras.backend.min(outputs["2"])) >= 0.0  # the last endpoint is after the final BN-ReLU


def test_wide_resnet_get_config_round_trip():
  backbone = backbones.WideResNetBackbone(depth=10, width_multiplier=2, dropout_rate=0.1)
  rebuilt = backbones.WideResNetBackbone.from_config(backbone.get_config())
  assert rebuilt.get_config() == backbone.get_config()
  assert rebuilt.count_params() == backbone.count_params()


@pytest.mark.parametrize("depth", [21, 4, 0, "22"])
def test_wide_resnet_rejects_depth_not_6n_plus_4(depth):
  with pytest.raises(ValueError, match="6n \\+ 4"):
    backbones.WideResNetBackbone(depth=depth)


def test_mlp_through_build_classification_model_is_784_300_100_10():
  model = _classifier(MNIST, backbones.SparseBackbone(type="mlp"))
  kernels = [w.shape.as_list() for w in model.trainable_weights if "kernel" in w.name]
  assert sorted(kernels) == sorted([[784, 300], [300, 100], [100, 10]])
  assert _num_trainable(model) == 784 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10
  assert model.backbone.output_specs["1"].as_list() == [None, 1, 1, 100]
  images = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype(np.float32)
  assert model(images).shape == (2, 10)


def test_mlp_rejects_unknown_input_shape_and_bad_sizes():
  with pytest.raises(ValueError, match="fully known input shape"):
    backbones.MLPBackbone(input_specs=keras.layers.InputSpec(shape=[None, None, None, 1]))
  with pytest.raises(ValueError, match="positive integers"):
    backbones.MLPBackbone(hidden_sizes=[300, 0])


def test_sparse_backbone_config_round_trip_and_override():
  config = backbones.SparseBackbone(type="wide_resnet")
  # A one-of config exports only the chosen member.
  assert config.as_dict() == {"type": "wide_resnet",
                              "wide_resnet": {"depth": 22, "width_multiplier": 2, "dropout_rate": 0.0}}
  assert backbones.SparseBackbone(type="mlp").as_dict() == {"type": "mlp", "mlp": {"hidden_sizes": [300, 100]}}
  assert backbones.SparseBackbone(type="resnet").get().model_id == 50  # the stock backbones stay available
  rebuilt = backbones.SparseBackbone()
  rebuilt.override(config.as_dict())
  assert rebuilt.as_dict() == config.as_dict()

  config.override({"wide_resnet": {"depth": 28, "width_multiplier": 10}})
  assert config.get() == backbones.WideResNet(depth=28, width_multiplier=10)

  model_config = image_classification.ImageClassificationModel(backbone=backbones.SparseBackbone())
  model_config.override({"backbone": {"type": "mlp", "mlp": {"hidden_sizes": [64]}}})
  assert model_config.backbone.get().hidden_sizes == [64]
  with pytest.raises(KeyError):  # a typo is caught, not silently ignored
    model_config.override({"backbone": {"mlp": {"hidden_size": [64]}}})


def test_backbone_factory_builds_both_from_config():
  norm_activation = common.NormActivation(activation="relu", norm_momentum=0.9, norm_epsilon=1e-5)
  l2 = keras.regularizers.L2(1e-4)
  wrn = mg_backbones.factory.build_backbone(
      input_specs=CIFAR,
      backbone_config=backbones.SparseBackbone(type="wide_resnet",
                                               wide_resnet=backbones.WideResNet(depth=10, width_multiplier=1)),
      norm_activation_config=norm_activation,
      l2_regularizer=l2)
  assert isinstance(wrn, backbones.WideResNetBackbone)
  assert wrn.get_config()["depth"] == 10
  assert all(bn.momentum == 0.9 and bn.epsilon == 1e-5
             for bn in _layers_of(wrn, keras.layers.BatchNormalization))
  assert all(c.kernel_regularizer is l2 for c in _layers_of(wrn, keras.layers.Conv2D))

  mlp = mg_backbones.factory.build_backbone(
      input_specs=MNIST,
      backbone_config=backbones.SparseBackbone(type="mlp", mlp=backbones.MLP(hidden_sizes=[32, 16, 8])),
      norm_activation_config=norm_activation,
      l2_regularizer=l2)
  assert isinstance(mlp, backbones.MLPBackbone)
  assert [d.units for d in _layers_of(mlp, keras.layers.Dense)] == [32, 16, 8]
  # The stock `Backbone` one-of is untouched: resnet still builds through the same config class.
  assert stock_backbones.Backbone(type="resnet").get().model_id == 50


def _prune_conv_and_dense(layer):
  if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
    return tfmot.sparsity.keras.prune_low_magnitude(layer)
  return layer.__class__.from_config(layer.get_config())


@pytest.mark.parametrize("make_backbone, num_kernels, images", [
    (lambda: backbones.WideResNetBackbone(depth=10, width_multiplier=2,
                                          input_specs=keras.layers.InputSpec(shape=[None, 8, 8, 3])),
     1 + 3 * 2 + 3, np.ones((2, 8, 8, 3), np.float32)),
    (lambda: backbones.MLPBackbone(hidden_sizes=[16, 8]), 2, np.ones((2, 28, 28, 1), np.float32)),
], ids=["wide_resnet", "mlp"])
def test_every_kernel_is_wrappable_by_tfmot_through_clone_model(make_backbone, num_kernels, images):
  backbone = make_backbone()
  pruned = keras.models.clone_model(backbone, clone_function=_prune_conv_and_dense)
  wrappers = [layer for layer in pruned.layers if isinstance(layer, pruning_wrapper.PruneLowMagnitude)]
  assert len(wrappers) == num_kernels
  assert {w.layer.name for w in wrappers} == {
      layer.name for layer in backbone.layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))}
  # The clone computes: same endpoints, same shapes.
  outputs = pruned(images)
  assert {k: v.shape for k, v in outputs.items()} == {k: v.shape for k, v in backbone(images).items()}
  assert all(len(w.pruning_vars) == 1 for w in wrappers)


def test_classifier_nested_backbone_needs_recursive_clone():
  """TFMOT's prune_low_magnitude does not look inside the nested backbone; cloning it recursively reaches it."""
  model = _classifier(MNIST, backbones.SparseBackbone(type="mlp"))

  def recurse(layer):
    if isinstance(layer, keras.Model):
      return keras.models.clone_model(layer, clone_function=recurse)
    return _prune_conv_and_dense(layer)

  pruned = keras.models.clone_model(model, clone_function=recurse)
  kernels = sorted(w.layer.kernel.shape.as_list() for w in pruned.submodules
                   if isinstance(w, pruning_wrapper.PruneLowMagnitude))
  assert kernels == sorted([[784, 300], [300, 100], [100, 10]])
  assert pruned(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 10)
