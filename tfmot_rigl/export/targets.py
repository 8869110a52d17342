"""What `tfm export --overwrite` and `tfm tflite --overwrite` may replace: only what an earlier run of the same
command wrote.

A typo in --export_dir or --output must not cost a training run: an export_dir that is, contains or lies inside a
model_dir (a directory `tfm train` or `tfm import-checkpoint` wrote checkpoints or params.yaml to), or that holds
anything but a SavedModel, is refused; so is a TFLite output inside the SavedModel it converts, or an existing
output that is not a TFLite file. Each check returns the one-line reason (None when the target is fine), for the
caller to raise as its own error before anything is read or written.
"""
import glob
import os
from typing import Iterable, Optional

# What `tfm export` leaves in an export_dir: Model Garden's SavedModel (tf.saved_model.save) and its params.yaml.
SAVED_MODEL_ENTRIES = frozenset(
    {'saved_model.pb', 'saved_model.pbtxt', 'fingerprint.pb', 'variables', 'assets', 'assets.extra', 'params.yaml'})
# A TFLite flatbuffer carries its file identifier at bytes 4..8.
TFLITE_IDENTIFIER = b'TFL3'
_LISTED = 5  # entries named in a refusal


def is_model_dir(path: str) -> bool:
  """Whether `path` is a training run's directory: a checkpoint, a checkpoint state file, or params.yaml without a
  SavedModel beside it (an export_dir holds params.yaml too)."""
  if not os.path.isdir(path):
    return False
  has = lambda name: os.path.exists(os.path.join(path, name))  # noqa: E731
  return (has('checkpoint') or has('experiment.txt') or bool(glob.glob(os.path.join(glob.escape(path), 'ckpt-*.index')))
          or (has('params.yaml') and not has('saved_model.pb')))


def _resolved(path: str) -> str:
  return os.path.realpath(os.path.abspath(path))


def _within(path: str, base: str) -> bool:
  """Whether resolved `path` is `base` or lies inside it."""
  return path == base or path.startswith(base.rstrip(os.sep) + os.sep)


def _enclosing_model_dir(path: str) -> Optional[str]:
  """`path` itself or its nearest ancestor that is a model_dir, else None."""
  current = path
  while True:
    if is_model_dir(current):
      return current
    parent = os.path.dirname(current)
    if parent == current:
      return None
    current = parent


def _listing(names: Iterable[str]) -> str:
  names = sorted(names)
  more = f' and {len(names) - _LISTED} more' if len(names) > _LISTED else ''
  return ', '.join(names[:_LISTED]) + more


def export_dir_problem(export_dir: str, overwrite: bool, model_dirs: Iterable[Optional[str]] = ()) -> Optional[str]:
  """Why `export_dir` must not be written (None if it may), given the run's model_dir and checkpoint paths."""
  target = _resolved(export_dir)
  if os.path.exists(target) and not os.path.isdir(target):
    return f'export_dir {export_dir!r} is a file; pass a directory path.'
  fresh = 'pass a new directory for the SavedModel (nothing was changed)'
  for model_dir in model_dirs:
    if not model_dir:
      continue
    source = _resolved(model_dir if os.path.isdir(model_dir) else os.path.dirname(model_dir))
    if _within(target, source) or _within(source, target):
      relation = 'is' if target == source else ('lies inside' if _within(target, source) else 'contains')
      return f'export_dir {export_dir!r} {relation} the model_dir {source} the model is read from; {fresh}.'
  enclosing = _enclosing_model_dir(target)
  if enclosing:
    relation = 'is' if enclosing == target else 'lies inside'
    return f'export_dir {export_dir!r} {relation} the training run {enclosing} (checkpoints, params.yaml); {fresh}.'
  if not os.path.isdir(target) or not os.listdir(target):
    return None
  if not overwrite:
    return (f'export_dir {export_dir!r} exists and is not empty; pass overwrite (--overwrite) to replace an earlier '
            'export there, or choose another directory.')
  entries = os.listdir(target)
  runs = [name for name in entries if is_model_dir(os.path.join(target, name))]
  if runs:
    return (f'export_dir {export_dir!r} contains the training run(s) {_listing(runs)}; --overwrite replaces only a '
            f'SavedModel an earlier `tfm export` wrote; {fresh}.')
  foreign = [name for name in entries if name not in SAVED_MODEL_ENTRIES]
  if foreign or 'saved_model.pb' not in entries:
    what = f'holds {_listing(foreign)}, which are' if foreign else 'is'
    return (f'export_dir {export_dir!r} {what} not part of a SavedModel; --overwrite replaces only a SavedModel an '
            f'earlier `tfm export` wrote; {fresh}.')
  return None


def tflite_output_problem(output: str, saved_model_dir: Optional[str], overwrite: bool) -> Optional[str]:
  """Why `output` must not be written (None if it may) when converting `saved_model_dir`."""
  target = _resolved(output)
  if saved_model_dir and _within(target, _resolved(saved_model_dir)):
    return (f'output {output!r} lies inside the SavedModel {saved_model_dir!r} it converts, which writing it would '
            'damage; pass a path outside it (nothing was changed).')
  if os.path.isdir(target):
    return f'output {output!r} is a directory; pass a file path such as model.tflite.'
  if not os.path.exists(target):
    return None
  if not overwrite:
    return f'output {output!r} exists; pass overwrite (--overwrite) to replace it, or choose another path.'
  with open(target, 'rb') as f:
    head = f.read(8)
  if head[4:8] != TFLITE_IDENTIFIER:
    return (f'output {output!r} is not a TFLite file; --overwrite replaces only a file an earlier `tfm tflite` '
            'wrote; pass another path (nothing was changed).')
  return None
