"""Checks of the stock Model Garden config blocks (trainer, data, runtime, model input) run by the experiment's
`validate()`.

Model Garden accepts values its trainer, Orbit or tf.data later reject deep inside a run (a batch size of 0, a
`steps_per_loop` of 0, an int8 "mixed precision" policy) or act on silently (a `checkpoint_interval` of 0 trains to the
end without writing any checkpoint). Each check here raises ValueError with one sentence naming the field, the value and
what to write instead, before anything is built or written.
"""
import numbers
from typing import Any, Sequence

# Model Garden's `performance.set_mixed_precision_policy` knows these; None or '' keeps float32.
MIXED_PRECISION_DTYPES = ('float32', 'float16', 'bfloat16')
# MNIST as the experiments read it (tfmot_rigl.data.mnist): 28x28 grey images.
MNIST_INPUT_SIZE = [28, 28, 1]
MNIST_TFDS_NAME = 'mnist'  # the data configs' tfds_name that tfmot_rigl.modelgarden.inputs reads as MNIST
# Largest seed every consumer takes (NumPy's global seed, which `tfm train` sets, stops at 2**32 - 1).
MAX_SEED = 2**32 - 1


def _is_int(value: Any) -> bool:
  return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(value: Any, field: str, meaning: str) -> None:
  if not _is_int(value) or value < 1:
    raise ValueError(f'{field}={value!r} must be a positive int ({meaning}).')


def _int_at_least(value: Any, field: str, low: int, meaning: str, allowed: Sequence[Any] = ()) -> None:
  if value in allowed and (value is None or _is_int(value)):
    return
  if not _is_int(value) or value < low:
    extra = ''.join(f' or {v!r}' for v in allowed)
    raise ValueError(f'{field}={value!r} must be an int >= {low}{extra} ({meaning}).')


def check_seed(value: Any, field: str, allow_none: bool = False) -> None:
  if allow_none and value is None:
    return
  if not _is_int(value) or not 0 <= value <= MAX_SEED:
    raise ValueError(f'{field}={value!r} must be an int in [0, {MAX_SEED}] (2**32 - 1), e.g. 0.')


def check_trainer(trainer) -> None:
  """The trainer fields Orbit's loop and checkpoint manager need positive (train_steps: see run_checks)."""
  positive_int(trainer.steps_per_loop, 'trainer.steps_per_loop', 'training steps per call of the train loop')
  positive_int(trainer.summary_interval, 'trainer.summary_interval', 'steps between summaries')
  if trainer.summary_interval % trainer.steps_per_loop:
    raise ValueError(f'trainer.summary_interval={trainer.summary_interval} must be a multiple of '
                     f'trainer.steps_per_loop={trainer.steps_per_loop}.')
  positive_int(trainer.checkpoint_interval, 'trainer.checkpoint_interval',
               'steps between checkpoints; 0 would end the run without any checkpoint — to keep only the last, set '
               'it to trainer.train_steps')
  positive_int(trainer.validation_interval, 'trainer.validation_interval', 'steps between evaluations')
  _int_at_least(trainer.validation_steps, 'trainer.validation_steps', 1, 'batches per evaluation; -1: the whole '
                'validation set', allowed=(-1,))
  _int_at_least(trainer.max_to_keep, 'trainer.max_to_keep', 1, 'checkpoints kept', allowed=(None,))
  if not _is_number(trainer.continuous_eval_timeout) or trainer.continuous_eval_timeout < 0:
    raise ValueError(f'trainer.continuous_eval_timeout={trainer.continuous_eval_timeout!r} must be a number of '
                     'seconds >= 0 (how long continuous_eval waits for a new checkpoint).')
  if not _is_number(trainer.loss_upper_bound) or not trainer.loss_upper_bound > 0:
    raise ValueError(f'trainer.loss_upper_bound={trainer.loss_upper_bound!r} must be a number > 0 (training stops '
                     'when the loss exceeds it).')
  _int_at_least(trainer.recovery_begin_steps, 'trainer.recovery_begin_steps', 0, 'steps')
  _int_at_least(trainer.recovery_max_trials, 'trainer.recovery_max_trials', 0, 'trials')


def check_data(data, what: str) -> None:
  """A data config's sizes and counts (`what`: 'task.train_data' or 'task.validation_data')."""
  positive_int(data.global_batch_size, f'{what}.global_batch_size', 'examples per step over all replicas')
  positive_int(data.shuffle_buffer_size, f'{what}.shuffle_buffer_size', 'examples in the shuffle buffer')
  _int_at_least(data.cycle_length, f'{what}.cycle_length', 1, 'files read in parallel; -1: autotuned',
                allowed=(None, -1))
  positive_int(data.block_length, f'{what}.block_length', 'consecutive records from each file')
  _int_at_least(data.prefetch_buffer_size, f'{what}.prefetch_buffer_size', 1, 'batches prefetched; -1: autotuned',
                allowed=(None, -1))
  _int_at_least(data.ram_budget, f'{what}.ram_budget', 0, 'GB for tf.data autotuning', allowed=(None,))
  check_seed(data.seed, f'{what}.seed', allow_none=True)
  for field, low, high in (('color_jitter', 0.0, 1.0), ('center_crop_fraction', 1e-6, 1.0),
                           ('randaug_magnitude', 0.0, None)):
    value = getattr(data, field, None)
    if value is not None and (not _is_number(value) or value < low or (high is not None and value > high)):
      bounds = f'in [{low:g}, {high:g}]' if high is not None else f'>= {low:g}'
      raise ValueError(f'{what}.{field}={value!r} must be a number {bounds}.')
  if getattr(data, 'pad_and_crop', 0) is not None:
    _int_at_least(data.pad_and_crop, f'{what}.pad_and_crop', 0, 'pixels of padding per side; 0: off')


def check_runtime(runtime) -> None:
  dtype = runtime.mixed_precision_dtype
  if dtype not in (None, '') and dtype not in MIXED_PRECISION_DTYPES:
    raise ValueError(f'runtime.mixed_precision_dtype={dtype!r} is not a mixed-precision policy; use one of '
                     f"{', '.join(MIXED_PRECISION_DTYPES)} (or leave it unset for float32).")
  _int_at_least(runtime.num_gpus, 'runtime.num_gpus', 0, 'GPUs to train on; 0: CPU')


def check_input_size(input_size: Any, mnist_data: bool) -> None:
  """task.model.input_size must be [height, width, channels] of the images the data gives the model."""
  if (not isinstance(input_size, (list, tuple)) or len(input_size) != 3
      or not all(_is_int(v) and v >= 1 for v in input_size)):
    raise ValueError(f'task.model.input_size={input_size!r} must be [height, width, channels] of positive ints, '
                     'e.g. [224, 224, 3].')
  if mnist_data and list(input_size) != MNIST_INPUT_SIZE:
    raise ValueError(f'task.model.input_size={list(input_size)} does not match the MNIST data, whose images are '
                     f'{MNIST_INPUT_SIZE}; leave task.model.input_size at {MNIST_INPUT_SIZE}.')
  if not mnist_data and input_size[2] != 3:
    raise ValueError(f'task.model.input_size={list(input_size)} has {input_size[2]} channels, but the image decoder '
                     'gives RGB images (3 channels); use [height, width, 3].')
