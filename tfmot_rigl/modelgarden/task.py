"""The sparse image-classification task: Model Garden's stock task with the model sparsified and the optimizer wrapped.

Only these things change from `official.vision.tasks.image_classification.ImageClassificationTask`:
  * `build_model` sparsifies the stock model with `prune_sparse` (as Model Garden's pruning project wraps it with
    TFMOT's `prune_low_magnitude`);
  * `create_optimizer` wraps the stock optimizer with `wrap_optimizer`, so mask updates run inside the train step at
    the exact training step, not once per `steps_per_loop` as a host-side Orbit action would;
  * Model Garden's composite blocks (ResNet's BottleneckBlock, MobileNet's InvertedBottleneckBlock, ...) are made
    prunable as a whole, as Model Garden's pruning project does, so every kernel inside them is sparsified (each at
    its own sparsity from the distribution);
  * `build_inputs` reads MNIST from `tfmot_rigl.data` when the data config names it, and adds CIFAR's pad-and-crop
    augmentation when `pad_and_crop` asks for it;
  * `train_step` can split the batch into micro-batches (`task.train_microbatches`).
Masks, TFMOT step counters and algorithm state are variables of the wrappers, so the trainer's checkpoint (model and
optimizer) holds everything needed to resume.
"""
from typing import Iterator, List, Optional

import tensorflow as tf
import tf_keras as keras
from absl import logging
from official.core import task_factory
from official.vision.tasks import image_classification
from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
from tensorflow_model_optimization.python.core.sparsity.keras import prune_registry

from tfmot_rigl import keras as sparse_keras
from tfmot_rigl.keras import pretrained
from tfmot_rigl.keras import training_steps
from tfmot_rigl.keras.log import logger
from tfmot_rigl.modelgarden import configs
from tfmot_rigl.modelgarden import inputs
from tfmot_rigl.modelgarden import resume
from tfmot_rigl.modelgarden import tf1_reference


@task_factory.register_task_cls(configs.SparseImageClassificationTask)
class SparseImageClassificationTask(image_classification.ImageClassificationTask):
  """Image classification trained sparse from scratch (RigL, SET, SNFS, SNIP, static) or magnitude-pruned."""

  def __init__(self, params: configs.SparseImageClassificationTask, logging_dir: Optional[str] = None,
               name: Optional[str] = None):
    super().__init__(params, logging_dir=logging_dir, name=name)
    # Set by build_model; create_optimizer needs it, and Model Garden's trainer calls the two in that order.
    self.sparse_model = None
    self._init_plan = None  # what task.init_checkpoint loads, checked once (check_init_checkpoint)
    self._initialized = False

  def build_model(self) -> keras.Model:
    """The stock classification model, sparsified as `task.sparsity` says."""
    model = super().build_model()
    sparsity = self.task_config.sparsity
    sparsity.validate()
    if sparsity.initial_mask == 'checkpoint' and not self.task_config.init_checkpoint:
      raise ValueError('task.sparsity.initial_mask=checkpoint takes the masks of task.init_checkpoint, which is '
                       'not set; set it to a sparse run\'s model_dir, or use initial_mask=magnitude or random.')
    make_blocks_prunable(model, sparsify_depthwise=sparsity.sparsify_depthwise)
    sparse_model = sparse_keras.prune_sparse(model, algorithm=sparsity.algorithm(), **sparsity.prune_kwargs())
    training_steps.explain_pending(  # this user never called prune_sparse: name the config field instead
        sparse_model, 'task.sparsity.total_steps is not set (validating the experiment config fills it in from '
        'trainer.train_steps, as exp_factory and `tfm train` do): set task.sparsity.total_steps, or call '
        'params.validate() on the ExperimentConfig before building the task.')
    if self.task_config.model.match_tf1_reference:
      tf1_reference.match_tf1_reference(
          sparse_model, relu_activations=self.task_config.model.backbone.type == 'mobilenet')
    wrappers = sparse_keras.sparse_wrappers(sparse_model)
    logging.info('Sparse training with %s: %d of %d kernels sparsified: %s', sparsity.algorithm(), len(wrappers),
                 len([w for w in model.weights if w.name.endswith('kernel:0')]),
                 ', '.join(wrapper.layer.name for wrapper in wrappers))
    self.sparse_model = sparse_model
    return sparse_model

  def check_init_checkpoint(self, model: keras.Model) -> Optional[pretrained.LoadPlan]:
    """What `initialize` will load from `task.init_checkpoint`, checked without changing the model (None if unset).

    Raises `pretrained.PretrainedError` (a ValueError, one line) for a missing path or a checkpoint that does not
    fit: `tfm train` calls this before it writes anything to model_dir.
    """
    if not self.task_config.init_checkpoint:
      return None
    if self._init_plan is None:
      modules = self.task_config.init_checkpoint_modules
      backbone = _backbone_of(model)
      roots = dict(model=model, **({'backbone': backbone} if backbone is not None else {}))
      if modules == 'all':
        required = None
      elif modules == 'backbone' and backbone is not None:
        required = backbone.weights
      else:
        raise pretrained.PretrainedError(f"task.init_checkpoint_modules={modules!r} is not supported; use 'all' or "
                                         "'backbone'.")
      self._init_plan = pretrained.plan_load(model, self.task_config.init_checkpoint, roots=roots,
                                             required=required)
    return self._init_plan

  def initialize(self, model: keras.Model):
    """Loads `task.init_checkpoint` (dense or sparse; `all` or `backbone`), then sets the first masks.

    Model Garden's trainer calls this when model_dir holds no checkpoint yet (a restart restores its own instead).
    Unlike the stock task's `tf.train.Checkpoint.read`, variables are paired across pruning wrappers (see
    `tfmot_rigl.keras.pretrained`), so a dense checkpoint of the same network — a `method=dense` run, or what
    Model Garden's stock `resnet_imagenet` / `mobilenet_imagenet` trainers write — initialises every method.
    """
    if self._initialized or not self.task_config.init_checkpoint:
      return
    plan = self.check_init_checkpoint(model)
    pretrained.apply_plan(plan)
    self._initialized = True
    logger.info('%s', plan.line())

  def create_optimizer(self, optimizer_config, runtime_config=None, dp_config=None):
    """The stock optimizer, wrapped so that `apply_gradients` also updates the masks of the model just built."""
    optimizer = super().create_optimizer(optimizer_config, runtime_config, dp_config=dp_config)
    if self.sparse_model is None:
      raise ValueError('SparseImageClassificationTask.create_optimizer needs the model: call build_model() first '
                       '(Model Garden\'s trainer does so).')
    if not sparse_keras.sparse_wrappers(self.sparse_model):
      return optimizer  # method=dense: nothing to update.
    return sparse_keras.wrap_optimizer(optimizer, self.sparse_model)

  def train_step(self, inputs, model, optimizer, metrics=None):
    """Model Garden's train step; with `task.train_microbatches` = n > 1, one update from n micro-batches.

    Each micro-batch's loss is scaled by 1 / (replicas · n) before its backward pass, as each of n replicas scales
    its own, and the gradients are summed in micro-batch order: with the batch split as the input splits it between
    workers, the arithmetic is that of n workers (see README, "Running at scale", for bit-identical results).
    """
    count = self.task_config.train_microbatches
    if count == 1:
      return super().train_step(inputs, model, optimizer, metrics)
    features, labels = inputs
    if self.task_config.losses.one_hot and not self.task_config.train_data.is_multilabel:
      labels = tf.one_hot(labels, self.task_config.model.num_classes)
    scale = tf.distribute.get_strategy().num_replicas_in_sync * count
    loss_scaling = isinstance(optimizer, keras.mixed_precision.LossScaleOptimizer)
    variables = model.trainable_variables
    total, losses, outputs = None, [], []
    for part_features, part_labels in zip(tf.split(features, count), tf.split(labels, count)):
      with tf.GradientTape() as tape:
        part_outputs = tf.nest.map_structure(lambda x: tf.cast(x, tf.float32), model(part_features, training=True))
        loss = self.build_losses(model_outputs=part_outputs, labels=part_labels, aux_losses=model.losses)
        scaled_loss = loss / scale
        if loss_scaling:
          scaled_loss = optimizer.get_scaled_loss(scaled_loss)
      grads = tape.gradient(scaled_loss, variables)
      if loss_scaling:
        grads = optimizer.get_unscaled_gradients(grads)
      total = grads if total is None else [b if a is None else a if b is None else a + b
                                           for a, b in zip(total, grads)]
      losses.append(loss)
      outputs.append(part_outputs)
    optimizer.apply_gradients(list(zip(total, variables)))
    outputs = tf.concat(outputs, axis=0)
    logs = {self.loss: tf.add_n(losses) / count}
    if getattr(self.task_config.model, 'output_softmax', False):
      outputs = tf.nn.softmax(outputs, axis=-1)
    if metrics:
      self.process_metrics(metrics, labels, outputs)
    elif model.compiled_metrics:
      self.process_compiled_metrics(model.compiled_metrics, labels, outputs)
      logs.update({m.name: m.result() for m in model.metrics})
    return logs

  def build_inputs(self, params, input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
    if inputs.is_mnist(params):
      # The run's seed orders the data, and a restart continues the stream at the restored checkpoint's step.
      start_step = resume.restored_step(self.logging_dir) if params.is_training else 0
      return inputs.mnist_inputs(params, input_context, seed=self.task_config.sparsity.seed, start_step=start_step)
    dataset = super().build_inputs(params, input_context)
    if params.is_training and getattr(params, 'pad_and_crop', 0):
      dataset = dataset.map(inputs.random_pad_and_crop(params.pad_and_crop), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset


def _backbone_of(model: keras.Model) -> Optional[keras.Model]:
  """The backbone: the stock model's attribute, or the one nested model of its sparsified clone."""
  if getattr(model, 'backbone', None) is not None:
    return model.backbone
  nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
  return nested[0] if len(nested) == 1 else None


def _layer_kernels(layer: keras.layers.Layer, sparsify_depthwise: bool) -> List[tf.Variable]:
  """The weights TFMOT's prune registry would sparsify in a stock layer; depthwise kernels only if asked."""
  if not layer.built:
    return []  # created by its block but never called (e.g. an unused projection): it has no kernel to sparsify.
  if isinstance(layer, keras.layers.DepthwiseConv2D) and not isinstance(layer, keras.layers.SeparableConv2D):
    return [layer.depthwise_kernel] if sparsify_depthwise else []
  if not prune_registry.PruneRegistry.supports(layer):
    return []
  weight_names = prune_registry.PruneRegistry._weight_names(layer)  # pylint: disable=protected-access
  return [getattr(layer, name) for name in weight_names]


def _sublayers(layer: keras.layers.Layer, recursive: bool) -> List[keras.layers.Layer]:
  """Layers a layer holds as attributes, in creation order (Keras' own traversal; no public equivalent)."""
  return list(layer._flatten_layers(include_self=False, recursive=recursive))  # pylint: disable=protected-access


def _is_sparsifiable_alone(layer: keras.layers.Layer) -> bool:
  return (isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, 'get_prunable_weights') or
          prune_registry.PruneRegistry.supports(layer))


def _composite_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
  """Layers of the functional graph(s) that hold other layers but are neither models nor prunable themselves."""
  for layer in model.layers:
    if isinstance(layer, keras.Model):
      yield from _composite_layers(layer)
    elif not _is_sparsifiable_alone(layer) and _sublayers(layer, recursive=False):
      yield layer


def make_blocks_prunable(model: keras.Model, sparsify_depthwise: bool = False) -> int:
  """Exposes the kernels inside Model Garden's composite blocks to `prune_sparse`; returns how many blocks.

  A block (BottleneckBlock, ResidualBlock, InvertedBottleneckBlock, Conv2DBNBlock, ...) calls its convolutions
  itself, so they are not layers of the functional graph that `prune_sparse` clones. Giving the block
  `get_prunable_weights` (TFMOT's PrunableLayer protocol, as Model Garden's pruning project does) lets one wrapper
  mask all of them; `prune_sparse` still gives each kernel its own sparsity ("block/kernel" entries).
  """
  count = 0
  for block in _composite_layers(model):
    kernels = [kernel for sublayer in _sublayers(block, recursive=True)
               for kernel in _layer_kernels(sublayer, sparsify_depthwise)]
    if kernels:
      block.get_prunable_weights = lambda kernels=tuple(kernels): list(kernels)
      count += 1
  return count
