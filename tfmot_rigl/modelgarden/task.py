"""The sparse image-classification task: Model Garden's stock task with the model sparsified and the optimizer wrapped.

Only three things change from `official.vision.tasks.image_classification.ImageClassificationTask`:
  * `build_model` sparsifies the stock model with `prune_sparse` (as Model Garden's pruning project wraps it with
    TFMOT's `prune_low_magnitude`);
  * `create_optimizer` wraps the stock optimizer with `wrap_optimizer`, so mask updates run inside the train step at
    the exact training step, not once per `steps_per_loop` as a host-side Orbit action would;
  * `build_inputs` reads MNIST from `tfmot_rigl.data` when the data config names it.
Masks, TFMOT step counters and algorithm state are variables of the wrappers, so the trainer's checkpoint (model and
optimizer) holds everything needed to resume.
"""
from typing import Optional

import tensorflow as tf
import tf_keras as keras
from absl import logging
from official.core import task_factory
from official.vision.tasks import image_classification

from tfmot_rigl.keras import optimizer as sparse_optimizer
from tfmot_rigl.keras import prune as sparse_prune
from tfmot_rigl.modelgarden import configs
from tfmot_rigl.modelgarden import inputs


@task_factory.register_task_cls(configs.SparseImageClassificationTask)
class SparseImageClassificationTask(image_classification.ImageClassificationTask):
  """Image classification trained sparse from scratch (RigL, SET, SNFS, SNIP, static) or magnitude-pruned."""

  def __init__(self, params: configs.SparseImageClassificationTask, logging_dir: Optional[str] = None,
               name: Optional[str] = None):
    super().__init__(params, logging_dir=logging_dir, name=name)
    # Set by build_model; create_optimizer needs it, and Model Garden's trainer calls the two in that order.
    self.sparse_model = None

  def build_model(self) -> keras.Model:
    """The stock classification model, sparsified as `task.sparsity` says."""
    model = super().build_model()
    sparsity = self.task_config.sparsity
    sparsity.validate()
    sparse_model = sparse_prune.prune_sparse(model, algorithm=sparsity.algorithm(), **sparsity.prune_kwargs())
    wrappers = sparse_prune.sparse_wrappers(sparse_model)
    logging.info('Sparse training with %s: %d of %d kernels sparsified: %s', sparsity.algorithm(), len(wrappers),
                 len([w for w in model.weights if w.name.endswith('kernel:0')]),
                 ', '.join(wrapper.layer.name for wrapper in wrappers))
    self.sparse_model = sparse_model
    return sparse_model

  def create_optimizer(self, optimizer_config, runtime_config=None, dp_config=None):
    """The stock optimizer, wrapped so that `apply_gradients` also updates the masks of the model just built."""
    optimizer = super().create_optimizer(optimizer_config, runtime_config, dp_config=dp_config)
    if self.sparse_model is None:
      raise ValueError('SparseImageClassificationTask.create_optimizer needs the model: call build_model() first '
                       '(Model Garden\'s trainer does so).')
    if not sparse_prune.sparse_wrappers(self.sparse_model):
      return optimizer  # method=dense: nothing to update.
    return sparse_optimizer.wrap_optimizer(optimizer, self.sparse_model)

  def build_inputs(self, params, input_context: Optional[tf.distribute.InputContext] = None) -> tf.data.Dataset:
    if inputs.is_mnist(params):
      return inputs.mnist_inputs(params, input_context)
    return super().build_inputs(params, input_context)
