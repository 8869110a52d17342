"""Model Garden backbones for the paper's small benchmarks: WideResNet (CIFAR-10) and the MNIST MLP.

Both are registered with Model Garden's backbone factory (types `wide_resnet` and `mlp`), so
`official.vision.modeling.factory.build_classification_model` builds them from a config and puts the stock
classification head (global average pool, Dense(num_classes)) on top. `SparseBackbone` is the stock `Backbone`
one-of config with these two added, so a task config keeps every Model Garden backbone and gains ours.

Both backbones are functional `tf_keras` models made only of stock Conv2D / Dense / BatchNormalization layers (no fused
custom blocks), so `tf_keras.models.clone_model` reaches every kernel and TFMOT's prune registry can wrap it.
"""
import dataclasses
from typing import List, Optional, Sequence

import tf_keras as keras
from official.modeling import hyperparams
from official.modeling import tf_utils
from official.vision.configs import backbones as backbones_cfg
from official.vision.modeling.backbones import factory

layers = keras.layers

# CIFAR input; the MLP needs the full shape because its first Dense layer sees the flattened image.
_CIFAR_INPUT_SPECS = layers.InputSpec(shape=[None, None, None, 3])
_MNIST_INPUT_SPECS = layers.InputSpec(shape=[None, 28, 28, 1])


# ----------------------------------------------------------------------------------------------------------------------
# Configs


@dataclasses.dataclass
class WideResNet(hyperparams.Config):
  """WideResNet-`depth`-`width_multiplier` (Zagoruyko & Komodakis 2016); the paper's CIFAR-10 model is WRN-22-2."""
  depth: int = 22
  width_multiplier: int = 2
  # Dropout between the two convolutions of every block, as in the WRN paper; the RigL paper trains without it.
  dropout_rate: float = 0.0


@dataclasses.dataclass
class MLP(hyperparams.Config):
  """Fully connected network on the flattened image; the default with a 10-way head is the paper's 784-300-100-10."""
  hidden_sizes: List[int] = dataclasses.field(default_factory=lambda: [300, 100])


@dataclasses.dataclass
class SparseBackbone(backbones_cfg.Backbone):
  """Model Garden's backbone one-of config plus `wide_resnet` and `mlp`."""
  wide_resnet: WideResNet = dataclasses.field(default_factory=WideResNet)
  mlp: MLP = dataclasses.field(default_factory=MLP)


# ----------------------------------------------------------------------------------------------------------------------
# WideResNet


def wide_resnet_blocks_per_group(depth: int) -> int:
  """Blocks n in each of the three groups, from the WRN paper's depth d = 6n + 4 (two 3x3 convs per block)."""
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 10 or (depth - 4) % 6:
    raise ValueError(f"WideResNet depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40, ...), got {depth!r}.")
  return (depth - 4) // 6


class _FunctionalBackbone(keras.Model):
  """What Model Garden expects of a backbone beyond the functional graph: its config and its output specs."""

  def get_config(self):
    return dict(self._config_dict)

  @classmethod
  def from_config(cls, config, custom_objects=None):
    return cls(**config)

  @property
  def output_specs(self):
    """A dict of {level: TensorShape} pairs for the model output."""
    return self._output_specs


@keras.utils.register_keras_serializable(package="tfmot_rigl")
class WideResNetBackbone(_FunctionalBackbone):
  """WideResNet for 32x32 inputs, with pre-activation basic blocks.

  Stem: 3x3 conv, 16 channels. Then three groups of n = (depth - 4) / 6 blocks with 16k, 32k, 64k channels and
  strides 1, 2, 2. A block is BN-ReLU-conv3x3(stride)-BN-ReLU-[dropout]-conv3x3, added to the input; where the shape
  changes (first block of each group), the shortcut is a 1x1 conv on the pre-activated input, as in the WRN paper and
  the RigL reference code. A final BN-ReLU closes the network. Convolutions have no bias (BN follows them).

  Trainable parameters with Model Garden's 10-class head (conv kernels + BN gamma/beta + Dense): WRN-22-2 1,079,642,
  of which 1,075,632 are conv kernel weights (the ~1.07-1.1M usually quoted for WRN-22-2; the RigL paper gives no
  count). The same code gives WRN-16-8 10,961,370, WRN-28-10 36,479,194 and WRN-40-4 8,949,210: the WRN paper's
  Table 1 lists 11.0M, 36.5M and 8.9M. WRN-22-2 and WRN-16-8 are checked in tests/test_backbones.py.

  Endpoints are keyed by level (log2 of the downsampling): '0' (32x32), '1' (16x16), '2' (8x8). '0' and '1' are raw
  group outputs (pre-activation network: their BN-ReLU belongs to the next block); '2' is after the final BN-ReLU and
  is what Model Garden's classification head pools.
  """

  def __init__(self,
               depth: int = 22,
               width_multiplier: int = 2,
               dropout_rate: float = 0.0,
               input_specs: layers.InputSpec = _CIFAR_INPUT_SPECS,
               activation: str = "relu",
               use_sync_bn: bool = False,
               norm_momentum: float = 0.99,
               norm_epsilon: float = 0.001,
               kernel_initializer: str = "he_normal",
               kernel_regularizer: Optional[keras.regularizers.Regularizer] = None,
               **kwargs):
    """Builds the functional graph.

    Args:
      depth: total depth 6n + 4.
      width_multiplier: k; the groups have 16k, 32k, 64k channels.
      dropout_rate: dropout between the two convolutions of each block.
      input_specs: input spec, NHWC.
      activation: activation name (Model Garden's `norm_activation.activation`).
      use_sync_bn: synchronized batch norm across replicas.
      norm_momentum: BN moving-average momentum (the RigL reference used 0.9).
      norm_epsilon: BN epsilon (the RigL reference used 1e-5).
      kernel_initializer: initializer of the conv kernels (He normal, as in the WRN paper).
      kernel_regularizer: regularizer of the conv kernels (the L2 weight decay).
      **kwargs: passed to `keras.Model`.
    """
    blocks_per_group = wide_resnet_blocks_per_group(depth)
    if isinstance(width_multiplier, bool) or not isinstance(width_multiplier, int) or width_multiplier < 1:
      raise ValueError(f"WideResNet width_multiplier must be a positive integer, got {width_multiplier!r}.")
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"WideResNet dropout_rate must be in [0, 1), got {dropout_rate!r}.")
    self._config_dict = {
        "depth": depth,
        "width_multiplier": width_multiplier,
        "dropout_rate": dropout_rate,
        "input_specs": input_specs,
        "activation": activation,
        "use_sync_bn": use_sync_bn,
        "norm_momentum": norm_momentum,
        "norm_epsilon": norm_epsilon,
        "kernel_initializer": kernel_initializer,
        "kernel_regularizer": kernel_regularizer,
    }
    self._bn_axis = -1 if keras.backend.image_data_format() == "channels_last" else 1

    inputs = keras.Input(shape=input_specs.shape[1:])
    x = self._conv(inputs, 16, 3, 1, name="stem_conv")
    endpoints = {}
    for group, (base_filters, strides) in enumerate(((16, 1), (32, 2), (64, 2))):
      for block in range(blocks_per_group):
        x = self._block(x,
                        filters=base_filters * width_multiplier,
                        strides=strides if block == 0 else 1,
                        name=f"group{group + 1}_block{block + 1}")
      if group == 2:
        x = self._bn_activation(x, name="final")
      endpoints[str(group)] = x

    self._output_specs = {level: endpoints[level].get_shape() for level in endpoints}
    super().__init__(inputs=inputs, outputs=endpoints, **kwargs)

  def _conv(self, x, filters: int, kernel_size: int, strides: int, name: str):
    return layers.Conv2D(filters=filters,
                         kernel_size=kernel_size,
                         strides=strides,
                         padding="same",
                         use_bias=False,
                         kernel_initializer=self._config_dict["kernel_initializer"],
                         kernel_regularizer=self._config_dict["kernel_regularizer"],
                         name=name)(x)

  def _bn_activation(self, x, name: str):
    x = layers.BatchNormalization(axis=self._bn_axis,
                                  momentum=self._config_dict["norm_momentum"],
                                  epsilon=self._config_dict["norm_epsilon"],
                                  synchronized=self._config_dict["use_sync_bn"],
                                  name=f"{name}_bn")(x)
    return tf_utils.get_activation(self._config_dict["activation"], use_keras_layer=True)(x)

  def _block(self, inputs, filters: int, strides: int, name: str):
    """One pre-activation basic block."""
    preactivated = self._bn_activation(inputs, name=f"{name}_preact")
    x = self._conv(preactivated, filters, 3, strides, name=f"{name}_conv1")
    if strides != 1 or inputs.shape[self._bn_axis] != filters:
      shortcut = self._conv(preactivated, filters, 1, strides, name=f"{name}_shortcut")
    else:
      # Identity shortcut takes the block input itself, not its activation (pre-activation ResNet).
      shortcut = inputs
    x = self._bn_activation(x, name=f"{name}_mid")
    if self._config_dict["dropout_rate"] > 0:
      x = layers.Dropout(self._config_dict["dropout_rate"], name=f"{name}_dropout")(x)
    x = self._conv(x, filters, 3, 1, name=f"{name}_conv2")
    return layers.Add(name=f"{name}_add")([shortcut, x])


# ----------------------------------------------------------------------------------------------------------------------
# MLP


@keras.utils.register_keras_serializable(package="tfmot_rigl")
class MLPBackbone(_FunctionalBackbone):
  """Flatten, then Dense + activation per hidden size (Dense layers named hidden_1, hidden_2, ...).

  The single endpoint '1' is the last hidden activation reshaped to [batch, 1, 1, units]: Model Garden's
  classification head global-average-pools a 4-D endpoint, which is the identity on a 1x1 map, then applies
  Dense(num_classes). With hidden_sizes [300, 100] on 28x28x1 the whole model is the paper's 784-300-100-10.
  """

  def __init__(self,
               hidden_sizes: Sequence[int] = (300, 100),
               input_specs: layers.InputSpec = _MNIST_INPUT_SPECS,
               activation: str = "relu",
               kernel_initializer: str = "glorot_uniform",
               kernel_regularizer: Optional[keras.regularizers.Regularizer] = None,
               bias_regularizer: Optional[keras.regularizers.Regularizer] = None,
               **kwargs):
    """Builds the functional graph.

    Args:
      hidden_sizes: units of each hidden Dense layer, input side first.
      input_specs: input spec; height, width and channels must be known (the first kernel's size depends on them).
      activation: activation name (Model Garden's `norm_activation.activation`).
      kernel_initializer: initializer of the Dense kernels.
      kernel_regularizer: regularizer of the Dense kernels (the L2 weight decay).
      bias_regularizer: regularizer of the Dense biases.
      **kwargs: passed to `keras.Model`.
    """
    hidden_sizes = list(hidden_sizes)
    if not hidden_sizes or any(isinstance(units, bool) or not isinstance(units, int) or units < 1
                               for units in hidden_sizes):
      raise ValueError(f"MLP hidden_sizes must be a non-empty list of positive integers, got {hidden_sizes!r}.")
    input_shape = list(input_specs.shape[1:]) if input_specs.shape is not None else [None]
    if any(dim is None for dim in input_shape):
      raise ValueError(f"MLP backbone needs a fully known input shape, got {input_specs.shape}; "
                       "set the model input size (e.g. model.input_size: [28, 28, 1]).")
    self._config_dict = {
        "hidden_sizes": hidden_sizes,
        "input_specs": input_specs,
        "activation": activation,
        "kernel_initializer": kernel_initializer,
        "kernel_regularizer": kernel_regularizer,
        "bias_regularizer": bias_regularizer,
    }

    inputs = keras.Input(shape=input_shape)
    x = layers.Flatten(name="flatten")(inputs)
    for index, units in enumerate(hidden_sizes):
      x = layers.Dense(units,
                       kernel_initializer=kernel_initializer,
                       kernel_regularizer=kernel_regularizer,
                       bias_regularizer=bias_regularizer,
                       name=f"hidden_{index + 1}")(x)
      x = tf_utils.get_activation(activation, use_keras_layer=True)(x)
    endpoints = {"1": layers.Reshape((1, 1, hidden_sizes[-1]), name="to_feature_map")(x)}

    self._output_specs = {level: endpoints[level].get_shape() for level in endpoints}
    super().__init__(inputs=inputs, outputs=endpoints, **kwargs)


# ----------------------------------------------------------------------------------------------------------------------
# Factory builders


@factory.register_backbone_builder("wide_resnet")
def build_wide_resnet(
    input_specs: layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: Optional[keras.regularizers.Regularizer] = None) -> keras.Model:
  """Builds a WideResNet backbone from a `SparseBackbone(type='wide_resnet')` config."""
  assert backbone_config.type == "wide_resnet", f"Inconsistent backbone type {backbone_config.type}"
  backbone_cfg = backbone_config.get()
  return WideResNetBackbone(depth=backbone_cfg.depth,
                            width_multiplier=backbone_cfg.width_multiplier,
                            dropout_rate=backbone_cfg.dropout_rate,
                            input_specs=input_specs,
                            activation=norm_activation_config.activation,
                            use_sync_bn=norm_activation_config.use_sync_bn,
                            norm_momentum=norm_activation_config.norm_momentum,
                            norm_epsilon=norm_activation_config.norm_epsilon,
                            kernel_regularizer=l2_regularizer)


@factory.register_backbone_builder("mlp")
def build_mlp(
    input_specs: layers.InputSpec,
    backbone_config: hyperparams.Config,
    norm_activation_config: hyperparams.Config,
    l2_regularizer: Optional[keras.regularizers.Regularizer] = None) -> keras.Model:
  """Builds an MLP backbone from a `SparseBackbone(type='mlp')` config."""
  assert backbone_config.type == "mlp", f"Inconsistent backbone type {backbone_config.type}"
  backbone_cfg = backbone_config.get()
  return MLPBackbone(hidden_sizes=backbone_cfg.hidden_sizes,
                     input_specs=input_specs,
                     activation=norm_activation_config.activation,
                     kernel_regularizer=l2_regularizer)
