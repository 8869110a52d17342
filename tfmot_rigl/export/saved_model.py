"""A trained sparse model as a plain serving SavedModel: restore the checkpoint, strip the wrappers, export.

The checkpoint `tfm train` writes holds the *wrapped* model (kernels, masks, TFMOT step counters, algorithm state)
and the optimizer. Model Garden's own export (`official.core.export_base.export`) restores the model it is about to
serve; here the served model is the stripped one, whose object graph no longer matches the checkpoint, so the
checkpoint is read into the task's wrapped model first, the masks are applied and the wrappers removed
(`tfmot_rigl.strip_sparse`), and only then is the plain model handed to Model Garden's export with its usual serving
module and signatures. The SavedModel therefore holds the sparse kernels (exact zeros where the masks were 0) and no
mask, threshold, step or algorithm-state variable.

Files are written to a temporary directory next to the target and renamed into place at the end, so a failed
export leaves an existing directory untouched (local paths only).
"""
import os
import shutil
import tempfile
from typing import Optional, Tuple

import tensorflow as tf
import tf_keras as keras
from google.protobuf import message
from official.core import config_definitions as cfg
from official.core import export_base
from official.core import task_factory
from official.core import train_utils
from official.vision.serving import image_classification

from tfmot_rigl import keras as sparse_keras
from tfmot_rigl.export import targets
from tfmot_rigl.modelgarden import inputs as sparse_inputs
from tfmot_rigl.modelgarden import task as sparse_task  # noqa: F401  (registers the sparse task with Model Garden)

# Model Garden's serving input types (official/vision/serving/export_base.py); 'tflite' takes preprocessed float
# features, the others take images and apply the training preprocessing inside the graph.
INPUT_TYPES = ('image_tensor', 'image_bytes', 'tf_example', 'tflite')


class ExportError(ValueError):
  """An export that cannot be done as asked (missing or unreadable checkpoint, occupied export_dir, ...)."""


def first_line(error: BaseException) -> str:
  text = str(error.args[0] if len(error.args) == 1 else error).strip()
  return text.splitlines()[0] if text else type(error).__name__


def build_sparse_model(params: cfg.ExperimentConfig) -> keras.Model:
  """The experiment's model as the trainer builds it: sparsified by the task, masks from the distribution."""
  return task_factory.get_task(params.task).build_model()


def find_checkpoint(model_dir: Optional[str] = None, checkpoint_path: Optional[str] = None) -> str:
  """The checkpoint to read: `checkpoint_path` (a checkpoint prefix, or a directory: its latest), else the latest in
  `model_dir`."""
  if checkpoint_path:
    if os.path.isdir(checkpoint_path):
      latest = tf.train.latest_checkpoint(checkpoint_path)
      if not latest:
        raise ExportError(f'no checkpoint in directory {checkpoint_path!r}; pass a checkpoint prefix such as '
                          'MODEL_DIR/ckpt-1000, or the model_dir of a `tfm train` run.')
      return latest
    if not tf.io.gfile.exists(checkpoint_path + '.index'):
      raise ExportError(f'checkpoint {checkpoint_path!r} not found (no {checkpoint_path}.index); pass a prefix such '
                        'as MODEL_DIR/ckpt-1000.')
    return checkpoint_path
  if not model_dir:
    raise ExportError('no checkpoint given; pass the model_dir of a `tfm train` run or a checkpoint path.')
  if not os.path.isdir(model_dir):
    raise ExportError(f'model_dir {model_dir!r} does not exist; pass the model_dir of a `tfm train` run.')
  latest = tf.train.latest_checkpoint(model_dir)
  if not latest:
    raise ExportError(f'no checkpoint in model_dir {model_dir!r}; train first (`tfm train`) or pass a checkpoint '
                      'path.')
  return latest


def restore_checkpoint(model: keras.Model, checkpoint_path: str) -> None:
  """Reads the model part of a trainer checkpoint (the optimizer and step are skipped) into the wrapped `model`."""
  try:
    # As Model Garden's export_base.export: every variable of the model must come from the checkpoint.
    tf.train.Checkpoint(model=model).read(checkpoint_path).assert_existing_objects_matched().expect_partial()
  except (tf.errors.OpError, AssertionError, ValueError, IndexError, message.DecodeError) as error:
    # (IndexError: a truncated data file; DecodeError: a damaged object graph.)
    raise ExportError(f'cannot restore checkpoint {checkpoint_path!r} ({first_line(error)}); is it from a '
                      '`tfm train` run of this experiment with the same overrides?') from None


def load_trained_model(params: cfg.ExperimentConfig, model_dir: Optional[str] = None,
                       checkpoint_path: Optional[str] = None) -> Tuple[keras.Model, str]:
  """(the wrapped sparse model with trained weights and masks, the checkpoint it was read from)."""
  path = find_checkpoint(model_dir, checkpoint_path)
  model = build_sparse_model(params)
  restore_checkpoint(model, path)
  return model, path


def _wrapper_only_variables(model) -> set:
  """ids of the variables that sparse training adds (masks, thresholds, step counters, algorithm state)."""
  ids = set()
  for wrapper in sparse_keras.sparse_wrappers(model):
    inner = {id(v) for v in wrapper.layer.weights}
    ids |= {id(v) for v in wrapper.weights if id(v) not in inner}
  return ids


def strip_for_serving(model: keras.Model) -> keras.Model:
  """The plain model (masks applied, wrappers removed), checked to hold no sparse-training variable."""
  added = _wrapper_only_variables(model)
  plain = sparse_keras.strip_sparse(model)
  leftover = [v.name for v in plain.variables if id(v) in added]
  if leftover or sparse_keras.sparse_wrappers(plain):
    raise RuntimeError(f'stripping left sparse-training variables in the model: {leftover}')
  return plain


class SparseClassificationModule(image_classification.ClassificationModule):
  """Model Garden's classification serving module, also for the MNIST task's one-channel [0, 1] inputs.

  The stock module assumes three-channel images normalised with ImageNet's mean and std, as Model Garden's
  classification reader feeds them; MNIST here is fed as pixel / 255 (`tfmot_rigl.data.mnist`), so its images are
  preprocessed the same way in the serving graph. Everything else is the stock module.
  """

  def __init__(self, params: cfg.ExperimentConfig, **kwargs):
    self._is_mnist = sparse_inputs.is_mnist(params.task.train_data)
    super().__init__(params, **kwargs)
    if self._input_type != 'tflite' and not self._is_mnist and self._num_channels != 3:
      raise ExportError(f'image preprocessing for serving is defined for 3-channel images (and MNIST), not '
                        f'{self._num_channels} channels; export with input_type=tflite (preprocessed float inputs).')

  def serve(self, images):
    if not self._is_mnist or self._input_type == 'tflite':
      return super().serve(images)
    images = tf.image.resize(tf.cast(images, tf.float32), self._input_image_size)  # no-op at 28×28
    logits = self.inference_step(images / 255.0)
    return {'logits': logits, 'probs': tf.nn.softmax(logits)}


def serving_preprocessing(params: cfg.ExperimentConfig, input_type: str) -> str:
  """What the serving graph does to its inputs before the model, in words."""
  size = '×'.join(str(d) for d in list(params.task.model.input_size)[:-1])
  if input_type == 'tflite':
    return f'float32 features already preprocessed as in training, {size} pixels'
  if input_type == 'image_tensor':
    scaling = ('pixel / 255' if sparse_inputs.is_mnist(params.task.train_data)
               else 'ImageNet mean/std normalisation')
    return f'uint8 images of any size, resized to {size} and scaled by {scaling} in the graph'
  return f'{input_type} inputs, decoded, resized to {size} and scaled in the graph'


def describe_signature(export_dir: str, preprocessing: str = '', signature_key: str = 'serving_default') -> str:
  """One line on the SavedModel's serving signature: input name, dtype and shape; outputs; preprocessing."""
  signature = tf.saved_model.load(export_dir).signatures[signature_key]
  _, inputs = signature.structured_input_signature

  def spec(name, tensor_spec):
    return f'{name} {tensor_spec.dtype.name} {list(tensor_spec.shape.as_list())}'.replace('None', '-1')

  ins = ', '.join(spec(name, value) for name, value in inputs.items())
  outs = ', '.join(spec(name, value) for name, value in signature.structured_outputs.items())
  return f'signature {signature_key}: input {ins} ({preprocessing}); outputs {outs}' if preprocessing else (
      f'signature {signature_key}: input {ins}; outputs {outs}')


def _check_target(export_dir: str, overwrite: bool, sources=()) -> None:
  problem = targets.export_dir_problem(export_dir, overwrite, sources)
  if problem:
    raise ExportError(problem)


def replace_directory(source: str, target: str) -> None:
  """Moves the finished `source` directory to `target`, replacing what is there only once `source` is complete."""
  if os.path.isdir(target):
    retired = tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.old-', dir=os.path.dirname(target))
    os.rename(target, os.path.join(retired, 'previous'))
    os.rename(source, target)
    shutil.rmtree(retired, ignore_errors=True)
  else:
    os.rename(source, target)


def staging_directory(target: str) -> str:
  """A new private directory next to `target` (same file system, so the final rename is atomic); remove it after."""
  parent = os.path.dirname(os.path.abspath(target))
  os.makedirs(parent, exist_ok=True)
  return tempfile.mkdtemp(prefix=f'.{os.path.basename(target)}.tmp-', dir=parent)


def export_saved_model(params: cfg.ExperimentConfig, export_dir: str, *, model_dir: Optional[str] = None,
                       checkpoint_path: Optional[str] = None, model: Optional[keras.Model] = None,
                       input_type: str = 'image_tensor', batch_size: Optional[int] = None,
                       overwrite: bool = False) -> str:
  """Writes the stripped sparse model of an experiment as a serving SavedModel; returns `export_dir`.

  Args:
    params: the experiment config the model was trained with (read its model_dir's params.yaml).
    export_dir: the SavedModel directory to write (with the experiment's params.yaml, as Model Garden's export).
    model_dir, checkpoint_path: where the trained weights are: a checkpoint prefix or directory (its latest), else
      the latest checkpoint in model_dir.
    model: instead of a checkpoint, an in-memory wrapped model of this experiment (e.g. just trained); as
      `strip_sparse` does, its kernels are multiplied by their masks in place.
    input_type: the serving signature, as Model Garden's export: 'image_tensor' (uint8 images
      [batch, height, width, channels], preprocessed in the graph as in training), 'image_bytes', 'tf_example', or
      'tflite' (float32 preprocessed features [batch, *input_size]). Outputs are {'logits', 'probs'}.
    batch_size: fixed serving batch size, None for any.
    overwrite: replace an earlier export in export_dir (otherwise a non-empty export_dir is an error); a
      directory holding anything but a SavedModel, or a model_dir, is never replaced (`targets`).

  Raises:
    ExportError: a missing or unreadable checkpoint, an occupied or protected export_dir, or an unsupported input
      type.
  """
  if input_type not in INPUT_TYPES:
    raise ExportError(f'input_type={input_type!r} is unknown; use one of {", ".join(INPUT_TYPES)}.')
  export_dir = os.path.abspath(export_dir)
  _check_target(export_dir, overwrite, (model_dir, checkpoint_path))
  if model is None:
    model, _ = load_trained_model(params, model_dir, checkpoint_path)
  plain = strip_for_serving(model)

  input_size = list(params.task.model.input_size)
  module = SparseClassificationModule(params, batch_size=batch_size, input_image_size=input_size[:-1],
                                      input_type=input_type, num_channels=input_size[-1], model=plain)
  staging = staging_directory(export_dir)
  try:
    # A fresh directory inside the private one, so the SavedModel gets the user's usual permissions.
    saved = os.path.join(staging, 'saved_model')
    # The weights are already in `plain`: no checkpoint for Model Garden's export to read.
    export_base.export(module, function_keys=[input_type], export_savedmodel_dir=saved, checkpoint_path=None,
                       timestamped=False)
    train_utils.serialize_config(params, saved)
    replace_directory(saved, export_dir)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return export_dir
