"""Reading a RigL reference checkpoint (TF1, google-research/rigl `rigl/imagenet_resnet`) by its variable names.

`open_checkpoint` opens a TF1 or TF2 checkpoint prefix (or the latest one of a directory) with
`tf.train.load_checkpoint`; `SourceVariables` looks a reference layer's variables up under either of the reference's
namings and records which ones were read, so the import can name any variable the network does not have.
`is_training_state` tells the variables of the reference's training run (optimizer slots, step counters) from the
network's. Problems are `CheckpointImportError`s: one line saying what is wrong and what to do.
"""
import os
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

# Training state of the reference's TF1 run (optimizer slots, step counters): in the checkpoint, not in the network.
TRAINING_STATE_NAMES = ('global_step', 'last_mask_update_step', 'beta1_power', 'beta2_power')
TRAINING_STATE_SUFFIXES = ('/Momentum', '/Adam', '/Adam_1', '/ExponentialMovingAverage')


class CheckpointImportError(ValueError):
  """A checkpoint that cannot be imported as asked; the message is one line saying what is wrong and what to do."""


def is_training_state(name: str) -> bool:
  """Variables of the reference's training run that are not part of the network (optimizer slots, counters)."""
  return name in TRAINING_STATE_NAMES or name.endswith(TRAINING_STATE_SUFFIXES)


def open_checkpoint(source: str):
  """(reader, {name: shape}) of a TF1 or TF2 checkpoint prefix (or a directory: its latest checkpoint)."""
  if not source:
    raise CheckpointImportError('--source is required: the reference checkpoint prefix, e.g. '
                                's80erk1x/model.ckpt-32000 (the files are PREFIX.index and PREFIX.data-*).')
  path = source
  if tf.io.gfile.isdir(source):
    path = tf.train.latest_checkpoint(source)
    if not path:
      raise CheckpointImportError(f'no checkpoint in directory {source!r}; pass a checkpoint prefix such as '
                                  f'{os.path.join(source, "model.ckpt-32000")}.')
  elif not tf.io.gfile.exists(source + '.index'):
    raise CheckpointImportError(f'checkpoint {source!r} not found (no {source}.index); pass the prefix, e.g. '
                                'model.ckpt-32000 for model.ckpt-32000.index and model.ckpt-32000.data-*.')
  try:
    reader = tf.train.load_checkpoint(path)
    shapes = reader.get_variable_to_shape_map()
    for name in shapes:  # every tensor, so that a truncated or corrupt data file is reported before any work
      reader.get_tensor(name)
  except (tf.errors.OpError, ValueError, IndexError) as error:
    message = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise CheckpointImportError(f'cannot read checkpoint {path!r} (truncated or corrupt?): {message}; pass a '
                                'complete checkpoint (download it again).') from None
  return reader, shapes


def short_names(names: Sequence[str], limit: int = 6) -> str:
  names = sorted(names)
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return ', '.join(names[:limit]) + more


class SourceVariables:
  """The source checkpoint's variables, recording which ones were read."""

  def __init__(self, reader, shapes: Dict[str, list]):
    self.reader = reader
    self.shapes = shapes
    self.read: List[str] = []
    self.missing: List[str] = []

  def find(self, scope: str, names: Sequence[str]) -> Optional[str]:
    """The first of scope/name (or scope/<leaf>/name, a tf.layers layer inside a same-named scope) present."""
    leaf = scope.rsplit('/', 1)[-1]
    for name in names:
      for candidate in (f'{scope}/{name}', f'{scope}/{leaf}/{name}'):
        if candidate in self.shapes:
          return candidate
    return None

  def get(self, name: str) -> np.ndarray:
    self.read.append(name)
    return self.reader.get_tensor(name)

  def require(self, scope: str, names: Sequence[str]) -> Optional[str]:
    found = self.find(scope, names)
    if found is None:
      self.missing.append(f'{scope}/{names[0]}')
    return found
