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


def check_model_dir(model_dir: str) -> None:
  """model_dir must be a directory, or creatable, and writable: checked without leaving anything behind."""
  if _is_remote(model_dir):
    return  # gs:// and other file systems: TensorFlow reports their own errors; permissions are not local.
  if os.path.exists(model_dir) and not os.path.isdir(model_dir):
    raise UsageError(f'--model_dir {model_dir} is a file, not a directory; pass a directory path (it is created '
                     'if missing).')
  existing = os.path.abspath(model_dir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise UsageError(f'--model_dir {model_dir} cannot be created: {existing} is a file; pass another directory.')
  try:
    # os.access is not enough: root passes it on read-only file systems. A probe directory, removed at once.
    os.rmdir(tempfile.mkdtemp(prefix='.tfm_write_probe_', dir=existing))
  except OSError as error:
    raise UsageError(f'--model_dir {model_dir} is not writable ({existing}: {error.strerror}); pass a directory '
                     'you can write to.') from None


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
