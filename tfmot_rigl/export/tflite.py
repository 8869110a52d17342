"""TFLite conversion of a stripped sparse SavedModel, with its size against a dense conversion and an output check.

`sparse=True` turns on the converter's `EXPERIMENTAL_SPARSITY` optimisation: kernels with enough zeros are stored
in TFLite's sparse tensor format (values plus CSR-like indices; block-sparse where the zeros allow it), and ops that
cannot compute with such a tensor get a DENSIFY op in front. `int8=True` adds dynamic-range quantisation (int8
weights, float activations) on top.

Running the converted model: the output check runs TFLite's builtin kernels without the default XNNPACK delegate
(`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`, the reference kernels, which read the sparse format), and every
file is also run once in a default `tf.lite.Interpreter` — what users load it with. Sparse int8 fully-connected
weights fail there ("failed to delegate FULLY_CONNECTED node ... TfLiteXNNPackDelegate failed to prepare"), so such
a file is refused unless `builtin_kernels_only=True` says it is meant for interpreters made with
BUILTIN_WITHOUT_DEFAULT_DELEGATES. (Block-sparse int8 weights — Keras block_shape (16, 1) — do run there, but compute
wrong outputs, NaN among them: the default interpreter's outputs are checked too.)

`TfliteResult.op_lines()` says which ops got sparse kernels: TFLite's FULLY_CONNECTED computes with weights stored
in blocks (1×4 float, 1×16 int8; see `tfmot_rigl.export.tflite_ops`), other sparse weights are densified at load.
"""
import dataclasses
import os
import shutil
import warnings
from typing import Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from official.modeling.hyperparams import params_dict

from tfmot_rigl.export import saved_model as saved_model_lib
from tfmot_rigl.export import targets
from tfmot_rigl.export import tflite_ops

SERVING_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
# Max |TFLite − SavedModel| over the outputs, relative to max(1, max |SavedModel output|): float conversion only
# reorders float arithmetic; dynamic-range int8 rounds every weight to 1/127 of its row's range.
FLOAT_TOLERANCE = 1e-4
INT8_TOLERANCE = 0.1
# How to make an interpreter that runs files the default one cannot (TFLite's builtin kernels, no XNNPACK).
BUILTIN_RESOLVER_ARGUMENT = ('experimental_op_resolver_type='
                             'tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES')


class TfliteError(ValueError):
  """A SavedModel that cannot be converted as asked (missing, no serving signature, unknown input shape, ...)."""


class OutputMismatchError(RuntimeError):
  """The converted model's outputs differ from the SavedModel's by more than the tolerance."""


@dataclasses.dataclass
class TfliteResult:
  """What `export_tflite` wrote and measured."""
  path: str
  size_bytes: int
  dense_size_bytes: int   # a float conversion of the same SavedModel without any optimisation
  max_abs_diff: float     # over all outputs and check inputs, TFLite vs. SavedModel
  tolerance: float        # the bound max_abs_diff was checked against (absolute)
  num_check_inputs: int
  sparse: bool
  int8: bool
  default_interpreter_error: Optional[str] = None   # why the default tf.lite.Interpreter cannot run it
  ops: Tuple[tflite_ops.WeightOp, ...] = ()         # the ops with weights, and how their weights are stored

  @property
  def runs_in_default_interpreter(self) -> bool:
    return self.default_interpreter_error is None

  @property
  def size_ratio(self) -> float:
    return self.size_bytes / self.dense_size_bytes

  def summary(self) -> str:
    kind = ' + '.join([name for name, on in (('sparse', self.sparse), ('int8 dynamic range', self.int8)) if on]
                      or ['dense float'])
    return (f'wrote {self.path} ({kind}): {self.size_bytes:,} bytes, {self.size_ratio:.3f}x the dense float TFLite '
            f'({self.dense_size_bytes:,} bytes). Outputs match the SavedModel within {self.max_abs_diff:.2e} '
            f'(tolerance {self.tolerance:.2e}) on {self.num_check_inputs} random inputs, run with the builtin '
            'kernels; ' + ('it also runs in the default tf.lite.Interpreter (XNNPACK).' if self.runs_in_default_interpreter
                           else 'run it with experimental_op_resolver_type=tf.lite.experimental.OpResolverType.'
                           'BUILTIN_WITHOUT_DEFAULT_DELEGATES: the default interpreter (XNNPACK) cannot run it.'))

  def interpreter_line(self) -> str:
    """The Python that loads the file in an interpreter that computes it right (checked against the SavedModel)."""
    if self.runs_in_default_interpreter:
      return (f'run it with tf.lite.Interpreter(model_path={self.path!r}) (default settings; outputs checked against '
              'the SavedModel).')
    why = (self.default_interpreter_error or 'it fails there').rstrip('.')
    int8_blocks = [op.name for op in self.ops if op.runs_sparse and op.block and op.weight_type == 'int8']
    if int8_blocks:
      why = f'{why}; int8 block-sparse weights in {", ".join(int8_blocks)}'
    return (f'run it with tf.lite.Interpreter(model_path={self.path!r}, {BUILTIN_RESOLVER_ARGUMENT}): the default '
            f'interpreter (XNNPACK delegate) does not run it right ({why}).')

  def op_lines(self) -> List[str]:
    """Which ops got sparse kernels and which compute dense (see tflite_ops.describe), and how to run the file."""
    lines = tflite_ops.describe(self.ops)
    if any(op.op == 'FULLY_CONNECTED' and op.weight_type == 'int8' and op.densified for op in self.ops):
      lines.append('(int8 FULLY_CONNECTED weights get sparse kernels only in 1×16 blocks: train with block_shape '
                   '(16, 1).)')
    elif any(op.op == 'FULLY_CONNECTED' and op.weight_type == 'float32' and op.densified for op in self.ops):
      lines.append('(float FULLY_CONNECTED weights get sparse kernels in 1×4 blocks: train with block_shape (4, 1).)')
    return lines + [self.interpreter_line()]


def load_serving_signature(saved_model_dir: str, signature_key: str = SERVING_SIGNATURE):
  """The SavedModel's serving function; TfliteError when there is no SavedModel or no such signature."""
  if not tf.saved_model.contains_saved_model(saved_model_dir):
    raise TfliteError(f'no SavedModel in {saved_model_dir!r}; export one first (`tfm export`).')
  loaded = tf.saved_model.load(saved_model_dir)
  if signature_key not in loaded.signatures:
    have = ', '.join(loaded.signatures) or 'none'
    raise TfliteError(f'SavedModel {saved_model_dir!r} has no {signature_key!r} signature (it has: {have}); export '
                      'it with a serving signature (`tfm export`).')
  signature = loaded.signatures[signature_key]
  for name, spec in sorted(signature.structured_input_signature[1].items()):
    if spec.shape.rank and 0 in spec.shape.as_list():  # e.g. a `tfm export --batch_size=0`: no example fits
      raise TfliteError(f'SavedModel {saved_model_dir!r} takes input {name!r} of shape {spec.shape.as_list()}, which '
                        'holds no data (a dimension of 0); export it again with a positive --batch_size, or none.')
  return loaded, signature


def convert(saved_model_dir: str, *, sparse: bool = False, int8: bool = False,
            signature_key: str = SERVING_SIGNATURE) -> bytes:
  """The TFLite flatbuffer of one signature of a SavedModel."""
  converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[signature_key])
  optimizations = []
  if sparse:
    optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
  if int8:
    optimizations.append(tf.lite.Optimize.DEFAULT)  # without a representative dataset: dynamic-range int8
  converter.optimizations = optimizations
  return converter.convert()


def make_interpreter(model_content: bytes) -> tf.lite.Interpreter:
  """An interpreter on TFLite's builtin kernels, without the default XNNPACK delegate (see the module docstring)."""
  with warnings.catch_warnings():
    # tf.lite.Interpreter warns on every first use that it moves to the ai_edge_litert package; that is TF's
    # roadmap, not something wrong with the user's model, and it would break the one-line output of `tfm tflite`.
    warnings.filterwarnings('ignore', category=UserWarning, module=r'tensorflow\.lite\.python\.interpreter')
    return tf.lite.Interpreter(
        model_content=model_content,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)


def default_interpreter_error(model_content: bytes, feeds: Dict[str, np.ndarray],
                              signature_key: str = SERVING_SIGNATURE, expected: Optional[Dict[str, np.ndarray]] = None,
                              tolerance: Optional[float] = None) -> Optional[str]:
  """Why a default `tf.lite.Interpreter` (XNNPACK delegate, as users load files) cannot run the model; None if it can.

  With `expected` outputs and a `tolerance`, outputs further than that from them count as not running it.
  """
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings('ignore', category=UserWarning, module=r'tensorflow\.lite\.python\.interpreter')
      outputs = tf.lite.Interpreter(model_content=model_content).get_signature_runner(signature_key)(**feeds)
  except (RuntimeError, ValueError) as error:
    return str(error).strip().splitlines()[0]
  if not all(np.all(np.isfinite(value)) for value in outputs.values()):
    return 'it computes NaN/inf outputs'
  if expected is not None and tolerance is not None:
    diff = _difference(expected, outputs)
    if not diff <= tolerance:
      return f'its outputs differ from the SavedModel\'s by up to {diff:.3g}'
  return None


def _input_size_from_params(saved_model_dir: str) -> Optional[list]:
  """task.model.input_size from the params.yaml that `tfm export` writes next to the SavedModel, if any."""
  path = os.path.join(saved_model_dir, 'params.yaml')
  if not os.path.isfile(path):
    return None
  params = params_dict.read_yaml_to_params_dict(path).as_dict()
  return ((params.get('task') or {}).get('model') or {}).get('input_size')


def random_inputs(signature, saved_model_dir: str, num_inputs: int, seed: int = 0) -> Dict[str, np.ndarray]:
  """A batch of `num_inputs` random inputs for each input of `signature`.

  uint8 image inputs get uniform pixels; float inputs standard normal values (the scale of normalised features).
  Unknown image dimensions are taken from the params.yaml beside the SavedModel.
  """
  rng = np.random.default_rng(seed)
  _, specs = signature.structured_input_signature
  feeds = {}
  for name, spec in specs.items():
    shape = list(spec.shape)
    if shape and shape[0] is None:
      shape[0] = num_inputs
    if any(d is None for d in shape):
      input_size = _input_size_from_params(saved_model_dir)
      if input_size is None or len(input_size) != len(shape) - 1:
        raise TfliteError(f'input {name!r} of the SavedModel has unknown dimensions {spec.shape}; export it with '
                          'input_type=tflite (fixed-size float features) or keep the params.yaml `tfm export` '
                          'writes beside it.')
      shape = [shape[0]] + [d if d is not None else s for d, s in zip(shape[1:], input_size)]
    if spec.dtype == tf.uint8:
      feeds[name] = rng.integers(0, 256, size=shape, dtype=np.uint8)
    elif spec.dtype.is_floating:
      feeds[name] = rng.standard_normal(size=shape).astype(spec.dtype.as_numpy_dtype)
    else:
      raise TfliteError(f'input {name!r} has dtype {spec.dtype.name}; random check inputs are made for uint8 '
                        'images and float features only.')
  return feeds


def saved_model_outputs(signature, feeds: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
  """{output name: value} of the SavedModel's signature on `feeds`."""
  return {name: value.numpy() for name, value in signature(**{k: tf.constant(v) for k, v in feeds.items()}).items()}


def _difference(expected: Dict[str, np.ndarray], actual: Dict[str, np.ndarray]) -> float:
  missing = sorted(set(expected) - set(actual))
  if missing:
    raise OutputMismatchError(f'the TFLite model lacks the outputs {missing} of the SavedModel.')
  return max(float(np.max(np.abs(actual[name].astype(np.float64) - expected[name]))) for name in expected)


def max_output_difference(model_content: bytes, feeds: Dict[str, np.ndarray], expected: Dict[str, np.ndarray],
                          signature_key: str = SERVING_SIGNATURE):
  """(max |TFLite − expected| over all outputs, max |expected|) on `feeds`, on TFLite's builtin kernels."""
  actual = make_interpreter(model_content).get_signature_runner(signature_key)(**feeds)
  diff = _difference(expected, actual)
  scale = max(float(np.max(np.abs(value))) for value in expected.values())
  return diff, scale


def _write_file(content: bytes, output: str) -> None:
  staging = saved_model_lib.staging_directory(output)
  try:
    staged = os.path.join(staging, os.path.basename(output))
    with open(staged, 'wb') as f:
      f.write(content)
    os.replace(staged, output)
  finally:
    shutil.rmtree(staging, ignore_errors=True)


def check_output_path(output: str, overwrite: bool, saved_model_dir: Optional[str] = None) -> None:
  problem = targets.tflite_output_problem(output, saved_model_dir, overwrite)
  if problem:
    raise TfliteError(problem)


def export_tflite(saved_model_dir: str, output: str, *, sparse: bool = False, int8: bool = False,
                  overwrite: bool = False, num_check_inputs: int = 4,
                  signature_key: str = SERVING_SIGNATURE, builtin_kernels_only: bool = False) -> TfliteResult:
  """Converts the SavedModel's serving signature to `output`, checks it against the SavedModel, reports sizes.

  The file is written only when the outputs agree: within FLOAT_TOLERANCE (INT8_TOLERANCE with `int8`) of the
  SavedModel's, relative to max(1, largest output magnitude), on `num_check_inputs` random inputs.

  It is also run in a default `tf.lite.Interpreter`; a file that fails there (an error, NaN, or outputs outside the
  same tolerance) is not written unless `builtin_kernels_only` (meant for interpreters made with
  BUILTIN_WITHOUT_DEFAULT_DELEGATES).

  Raises:
    TfliteError: no SavedModel or serving signature there, `output` exists and `overwrite` is False (or it is not a
      TFLite file, or lies inside the SavedModel), or the default interpreter cannot run the file (and not
      `builtin_kernels_only`).
    OutputMismatchError: the converted model's outputs differ by more than the tolerance.
  """
  check_output_path(output, overwrite, saved_model_dir)  # before the SavedModel is read: nothing is touched
  loaded, signature = load_serving_signature(saved_model_dir, signature_key)
  content = convert(saved_model_dir, sparse=sparse, int8=int8, signature_key=signature_key)
  dense_content = content if not (sparse or int8) else convert(saved_model_dir, signature_key=signature_key)
  feeds = random_inputs(signature, saved_model_dir, num_check_inputs)
  expected = saved_model_outputs(signature, feeds)
  diff, scale = max_output_difference(content, feeds, expected, signature_key)
  del loaded  # kept alive until here: the signature reads its variables
  tolerance = (INT8_TOLERANCE if int8 else FLOAT_TOLERANCE) * max(1.0, scale)
  if not diff <= tolerance:  # also catches NaN
    raise OutputMismatchError(f'the TFLite model\'s outputs differ from the SavedModel\'s by up to {diff:.3g} '
                              f'(tolerance {tolerance:.3g}); {output} was not written.')
  default_error = default_interpreter_error(content, feeds, signature_key, expected=expected, tolerance=tolerance)
  if default_error and not builtin_kernels_only:
    kind = ' '.join(flag for flag, on in (('--sparse', sparse), ('--int8', int8)) if on) or 'this'
    raise TfliteError(f'a {kind} file does not run in the default tf.lite.Interpreter (XNNPACK delegate: '
                      f'{default_error}); {output} was not written. Use --sparse alone (float) or --int8 alone, or '
                      'pass --builtin_kernels_only to write it for interpreters made with BUILTIN_WITHOUT_DEFAULT_'
                      'DELEGATES.')
  _write_file(content, output)
  return TfliteResult(path=output, size_bytes=len(content), dense_size_bytes=len(dense_content), max_abs_diff=diff,
                      tolerance=tolerance, num_check_inputs=num_check_inputs, sparse=sparse, int8=int8,
                      default_interpreter_error=default_error,
                      ops=tuple(tflite_ops.weight_ops(content)))
