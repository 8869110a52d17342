"""Checks of `tfm train` input that run before anything is written: each bad input becomes one UsageError line.

Model Garden reads the config sources and the model_dir as it goes, so a typo surfaces as a YAML traceback, a
`NotFoundError` for an override it took for a file name, or a `ValueError` without the key it is about. These checks
read the same sources first and say which flag or key is wrong and what to write instead.
"""
import copy
import os
import tempfile
from typing import Any, Iterator, List, Mapping, Optional, Tuple

import yaml

from tfmot_rigl.cli import UsageError

# Model Garden's `runtime.distribution_strategy` names (official.common.distribute_utils).
STRATEGIES = ('mirrored', 'multi_worker_mirrored', 'one_device', 'tpu', 'parameter_server', 'off')
_OVERRIDE_EXAMPLE = 'task.sparsity.sparsity=0.9,trainer.train_steps=1000'


def _yaml_loader():
  from official.modeling.hyperparams import params_dict
  return params_dict._LOADER  # pylint: disable=protected-access  (Model Garden's loader: it reads 1e-4 as a float)


def _yaml_problem(error: yaml.YAMLError) -> str:
  problem = getattr(error, 'problem', None) or str(error).splitlines()[0]
  mark = getattr(error, 'problem_mark', None)
  return f'{problem} at line {mark.line + 1}, column {mark.column + 1}' if mark else problem


def _is_remote(path: str) -> bool:
  return '://' in path


# How long a remote model_dir (gs://, s3://, ...) may take to answer whether it exists before `tfm` gives up:
# TensorFlow's file systems retry for minutes without network or credentials.
REMOTE_PROBE_SECONDS = 20
# The host TensorFlow's GCS file system talks to: resolved first, so that a machine without network fails at once.
_GCS_HOST = 'storage.googleapis.com'


def _within(seconds: float, function, *args):
  """(finished, result or exception) of function(*args) run in a daemon thread for at most `seconds`."""
  import threading
  outcome = []

  def target():
    try:
      outcome.append((True, function(*args)))
    except Exception as error:  # pylint: disable=broad-except  (reported by the caller)
      outcome.append((False, error))

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(seconds)
  return (True, outcome[0]) if outcome else (False, None)


def check_remote_dir(path: str, flag: str = '--model_dir') -> None:
  """A gs:// (or other remote) directory must answer within REMOTE_PROBE_SECONDS; one line instead of a hang."""
  import socket
  scheme = path.split('://', 1)[0]
  fix = 'pass a local directory, or check the network and the credentials (e.g. gcloud auth application-default login)'
  if scheme == 'gs':
    finished, outcome = _within(REMOTE_PROBE_SECONDS, socket.getaddrinfo, _GCS_HOST, 443)
    if finished and not outcome[0]:
      raise UsageError(f'{flag} {path} cannot be reached: {_GCS_HOST} does not resolve ({outcome[1]}); {fix}.')
  import tensorflow as tf
  finished, outcome = _within(REMOTE_PROBE_SECONDS, tf.io.gfile.isdir, path)
  if not finished:
    raise UsageError(f'{flag} {path}: no answer from {scheme}:// within {REMOTE_PROBE_SECONDS} s; {fix}.')
  if not outcome[0]:
    reason = (str(getattr(outcome[1], 'message', outcome[1])).strip().splitlines() or ['error'])[0]
    raise UsageError(f'{flag} {path} is not accessible ({reason}); {fix}.')


def check_path_length(path: str, flag: str = '--model_dir') -> None:
  """Paths over the file system's limits fail deep inside TensorFlow's writers: refused up front."""
  absolute = os.path.abspath(path)
  name_max = os.pathconf('/', 'PC_NAME_MAX')
  path_max = os.pathconf('/', 'PC_PATH_MAX')
  long_names = [name for name in absolute.split(os.sep) if len(name.encode()) > name_max]
  if long_names:
    raise UsageError(f'{flag} has a path component of {len(long_names[0].encode())} bytes ({long_names[0][:24]}...), '
                     f'over the file system\'s limit of {name_max} (NAME_MAX); pass a shorter path.')
  # Room for the files written inside it (e.g. train/events.out.tfevents.<time>.<host>.<pid>.v2).
  if len(absolute.encode()) + 128 > path_max:
    raise UsageError(f'{flag} is {len(absolute.encode())} bytes long, too close to the limit of {path_max} '
                     '(PATH_MAX) for the files written inside it; pass a shorter path.')


def check_model_dir(model_dir: str, flag: str = '--model_dir') -> None:
  """model_dir must be a directory, or creatable, and writable: checked without leaving anything behind.

  Also used for the other directories `tfm` writes (export_dir, output_dir), named by `flag`.
  """
  if _is_remote(model_dir):
    check_remote_dir(model_dir, flag)
    return  # permissions are not local: TensorFlow reports its own errors for a bucket it may read but not write
  check_path_length(model_dir, flag)
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise UsageError(f'{flag} {model_dir} is a file, not a directory; pass a directory path (it is created '
                     'if missing).')
  existing = os.path.abspath(model_dir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UsageError(f'{flag} {model_dir} cannot be created: {existing} is a file; pass another directory.')
  try:
    # os.access is not enough: root passes it on read-only file systems. A probe directory, removed at once.
    os.rmdir(tempfile.mkdtemp(prefix='.tfm_write_probe_', dir=existing))
  except OSError as error:
    raise UsageError(f'{flag} {model_dir} is not writable ({existing}: {error.strerror}); pass a directory '
                     'you can write to.') from None


def check_devices(params) -> None:
  """GPUs asked for must exist: MirroredStrategy over absent GPUs waits forever without a word."""
  wanted = params.runtime.num_gpus
  if not wanted:
    return
  import tensorflow as tf
  found = len(tf.config.list_physical_devices('GPU'))  # lists devices without initialising them
  if wanted > found:
    raise UsageError(f'runtime.num_gpus={wanted}, but TensorFlow finds {found} GPU(s) on this machine; set '
                     f'runtime.num_gpus={found}' + (' to train on the CPU.' if not found else '.'))


def _config_file_dict(path: str) -> Mapping[str, Any]:
  try:
    with open(path) as f:
      content = yaml.load(f, Loader=_yaml_loader())
  except yaml.YAMLError as error:
    raise UsageError(f'--config_file {path} is not valid YAML: {_yaml_problem(error)}; fix that line.') from None
  except (OSError, UnicodeDecodeError) as error:
    raise UsageError(f'--config_file {path} cannot be read ({error}); pass a YAML file.') from None
  if content is None:
    raise UsageError(f'--config_file {path} is empty; give it the fields to change (e.g. "task: {{sparsity: '
                     '{sparsity: 0.9}}") or leave the flag out.')
  if not isinstance(content, dict):
    raise UsageError(f'--config_file {path} holds a YAML {type(content).__name__}, not a mapping of config fields; '
                     'write e.g. "task: {sparsity: {sparsity: 0.9}}".')
  return content


def _override_dict(override: str) -> Mapping[str, Any]:
  """One --params_override value as Model Garden reads it: key=value CSV, a YAML/JSON mapping, or a YAML file."""
  from official.modeling.hyperparams import params_dict
  try:
    text = params_dict.nested_csv_str_to_json_str(override)
  except ValueError:
    text = override
  try:
    content = yaml.load(text, Loader=_yaml_loader())
  except yaml.YAMLError:
    content = None
  if isinstance(content, dict):
    return content
  if os.path.isfile(override):
    return _config_file_dict(override)
  raise UsageError(f'--params_override {override!r} is malformed; write comma-separated key=value pairs '
                   f'(e.g. {_OVERRIDE_EXAMPLE}; lists as key=[1,2]), a YAML mapping or a YAML file path.')


def config_sources(flags_obj) -> List[Tuple[str, Mapping[str, Any]]]:
  """(flag, dict) of every config source in the order Model Garden applies them; UsageError on a malformed one."""
  sources = [(f'--config_file {path}', _config_file_dict(path)) for path in (flags_obj.config_file or [])]
  overrides = flags_obj.params_override
  for override in ([overrides] if isinstance(overrides, str) else list(overrides or [])):
    if override:
      sources.append(('--params_override', _override_dict(override)))
  return sources


def _leaves(tree: Mapping[str, Any], prefix: str = '') -> Iterator[Tuple[str, Any]]:
  for key, value in tree.items():
    path = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      yield from _leaves(value, path + '.')
    else:
      yield path, value


def _nested(path: str, value: Any) -> dict:
  tree = value
  for key in reversed(path.split('.')):
    tree = {key: tree}
  return tree


def bad_value(experiment: str, sources) -> Optional[str]:
  """'flag: key=value is invalid (reason)' for the first config value the experiment's config rejects, else None.

  Model Garden's override errors name the value but not the key; applying the sources one leaf at a time finds it.
  """
  from official.core import exp_factory
  base = exp_factory.get_exp_config(experiment)
  for flag, tree in sources:
    for path, value in _leaves(tree):
      config = copy.deepcopy(base)
      try:
        config.override(_nested(path, value), is_strict=True)
      except (ValueError, TypeError, AttributeError) as error:
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        default = _default_of(base, path)
        hint = f'; it takes a {type(default).__name__} like {default!r}' if default is not None else ''
        return f'{flag}: {path}={value!r} is invalid ({reason}){hint}.'
      except KeyError:
        continue  # an unknown key: Model Garden's own message, reported by the caller, names it
  return None


def _default_of(config, path: str) -> Any:
  for key in path.split('.'):
    config = getattr(config, key, None)
    if config is None:
      return None
  return config if isinstance(config, (bool, int, float, str)) else None


def check_strategy(params) -> None:
  name = str(params.runtime.distribution_strategy or '').lower()
  if name not in STRATEGIES:
    raise UsageError(f'runtime.distribution_strategy={params.runtime.distribution_strategy!r} is unknown; use one '
                     f'of {", ".join(STRATEGIES)}.')


def check_train_steps(params, mode: str) -> None:
  steps = params.trainer.train_steps
  if 'train' in mode and (isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0):
    raise UsageError(f'trainer.train_steps={steps!r} must be a positive number of training steps.')


def check_finite(sources) -> None:
  """No config value given by the user may be NaN or infinite (YAML's .nan / .inf): no field means anything by it."""
  import math
  for flag, tree in sources:
    for path, value in _leaves(tree):
      values = value if isinstance(value, list) else [value]
      if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise UsageError(f'{flag}: {path}={value!r} is not a finite number; give it a finite value.')


def _kind(value) -> str:
  if isinstance(value, bool):
    return 'true or false'
  if isinstance(value, (int, float)):
    return 'number'
  return 'string'


def check_types(experiment: str, sources) -> None:
  """Each value given must have the kind of the field's default (Model Garden keeps a string in an int field)."""
  from official.core import exp_factory
  base = exp_factory.get_exp_config(experiment)
  for flag, tree in sources:
    for path, value in _leaves(tree):
      default = _default_of(base, path)
      if default is None or value is None or isinstance(value, (list, dict)):
        continue
      if _kind(value) != _kind(default):
        raise UsageError(f'{flag}: {path}={value!r} must be a {_kind(default)}, like its default {default!r}.')
