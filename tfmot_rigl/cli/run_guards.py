"""Guards of a `tfm train` run's model_dir: config paths that must stay inside it, and what an interrupt leaves.

Model Garden and the sparsity summaries join config paths onto model_dir as given, so an absolute path or `../`
in `task.monitoring.summary_subdir` would write outside the run (os.path.join drops model_dir before an absolute
path). `check_config_paths` resolves each one first. `interrupted_line` is what Ctrl-C prints instead of a
KeyboardInterrupt traceback: where the last checkpoint is, from which the same command resumes.
"""
import os
from typing import Optional

from tfmot_rigl.cli import UsageError

# Config fields holding a path relative to model_dir; (field, whether an empty value is allowed: it turns it off).
MODEL_DIR_PATHS = (
    ('task.monitoring.summary_subdir', False),
    ('task.monitoring.mask_subdir', False),
    ('trainer.best_checkpoint_export_subdir', True),
)


def _value(params, field: str):
  for key in field.split('.'):
    params = getattr(params, key, None)
  return params


def path_problem(base: str, relative: str) -> Optional[str]:
  """Why `relative` joined to `base` would leave `base` (None if it stays strictly inside)."""
  if os.path.isabs(relative) or '://' in relative:
    return 'is an absolute path'
  resolved = os.path.normpath(os.path.join(os.path.abspath(base), relative))
  if os.path.commonpath([resolved, os.path.abspath(base)]) != os.path.abspath(base):
    return f'leads outside it (to {resolved})'
  if resolved == os.path.abspath(base):
    return 'is model_dir itself'
  return None


def check_config_paths(params, model_dir: str) -> None:
  """UsageError for a config path that would be written outside model_dir (or onto model_dir itself)."""
  for field, may_be_empty in MODEL_DIR_PATHS:
    value = _value(params, field)
    if value is None or (value == '' and may_be_empty):
      continue
    problem = path_problem(model_dir, str(value)) if value != '' else 'is empty'
    if problem:
      raise UsageError(f'{field}={value!r} {problem}: it is a subdirectory of --model_dir; give a relative name '
                       'such as its default.')


def interrupted_line(model_dir: str) -> str:
  """One line for an interrupted run: the last checkpoint, or that there is none."""
  import tensorflow as tf
  try:
    latest = tf.train.latest_checkpoint(model_dir) if tf.io.gfile.isdir(model_dir) else None
  except Exception:  # pylint: disable=broad-except  (whatever the state file holds, the line must be printed)
    latest = None
  if not latest:
    return (f'interrupted before the first checkpoint: {model_dir} holds nothing to resume; run the command again '
            'to start over.')
  return (f'interrupted; the last checkpoint is {latest} (step {latest.rsplit("-", 1)[-1]}): run the same command '
          'again to resume from it.')
