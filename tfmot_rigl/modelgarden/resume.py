"""Restarting a run on its model_dir: what must not change, whether the latest checkpoint is readable, and its step.

Model Garden's trainer restores the latest checkpoint of model_dir whatever the config now says, so a restart with
another method, sparsity, distribution or model would restore weights and masks into a model they were not trained
for (or silently leave parts of it at their random initialisation). `incompatible_change` names the first such
difference between model_dir's params.yaml and the new config; `check_latest_checkpoint` reads every tensor of the
checkpoint a restart would restore, so a truncated or corrupt file is reported before training starts; and
`restored_step` is the step that checkpoint holds, from which the training input continues (`tfmot_rigl.modelgarden
.inputs`) so that a resumed run sees exactly the batches an uninterrupted one would.
"""
import dataclasses
import glob
import os
from typing import Any, Iterator, List, Mapping, Optional, Tuple

import tensorflow as tf
from official.core import exp_factory
from official.modeling import hyperparams

from tfmot_rigl.modelgarden import sparsity_config

PARAMS_FILE = 'params.yaml'
# The experiment name `tfm train` ran, beside params.yaml (which does not record it).
EXPERIMENT_FILE = 'experiment.txt'
# The trainer checkpoint's step counter (Model Garden's `tf.train.Checkpoint(global_step=...)`).
GLOBAL_STEP_KEY = 'global_step/.ATTRIBUTES/VARIABLE_VALUE'

# Every task.sparsity field, classified once: a change on restart to a MASK_SHAPING one is refused (the checkpoint's
# masks, or their per-layer counts, were made under the old value and would be restored into a model that expects
# others); a FREE_TO_CHANGE one may change (e.g. to extend a run or retune the update schedule). The restart check
# reads MASK_SHAPING; tests/test_restart_fields.py fails for a SparsityConfig field in neither tuple, so a field
# added later gets a decision, and a field nobody classified is treated as mask-shaping meanwhile.
# initial_sparsity is mask-shaping (turning gradual pruning off mid-run would freeze the masks at an intermediate
# count); prune_end is a schedule knob like end_step (the count follows the new schedule from the restored step).
MASK_SHAPING = ('method', 'sparsity', 'distribution', 'erk_power_scale', 'first_layer_dense', 'custom_sparsities',
                'exclude', 'sparsify_depthwise', 'block_shape', 'block_norm', 'initial_sparsity', 'initial_mask')
FREE_TO_CHANGE = ('update_frequency', 'begin_step', 'end_step', 'drop_fraction', 'drop_fraction_anneal', 'grow_init',
                  'initial_acc_scale', 'snfs_momentum', 'prune_end', 'seed', 'total_steps')


def identity_fields() -> Tuple[str, ...]:
  """The config fields a restart must keep: the model, and every task.sparsity field not FREE_TO_CHANGE."""
  names = [field.name for field in dataclasses.fields(sparsity_config.SparsityConfig)]
  shaping = list(MASK_SHAPING) + [name for name in names if name not in MASK_SHAPING + FREE_TO_CHANGE]
  return ('task.model',) + tuple(f'task.sparsity.{name}' for name in shaping)


class ResumeError(ValueError):
  """model_dir cannot be resumed by this run; the message is one line saying why and what to do."""


def _get(tree: Mapping[str, Any], path: str) -> Any:
  for key in path.split('.'):
    if not isinstance(tree, Mapping) or key not in tree:
      return None
    tree = tree[key]
  return tree


def _leaves(value: Any, path: str) -> Iterator[Tuple[str, Any]]:
  if isinstance(value, Mapping):
    for key in sorted(value):
      yield from _leaves(value[key], f'{path}.{key}')
  else:
    yield path, value


def _normalised(value: Any) -> Any:
  # YAML gives lists where the config has tuples, and ints where a float field holds an integral value.
  if isinstance(value, (list, tuple)):
    return [_normalised(v) for v in value]
  if isinstance(value, bool) or value is None:
    return value
  if isinstance(value, (int, float)):
    return float(value)
  return value


def incompatible_change(saved: Mapping[str, Any], new: Mapping[str, Any]) -> Optional[Tuple[str, Any, Any]]:
  """(field, saved value, new value) of the first `identity_fields()` leaf that differs, or None."""
  for field in identity_fields():
    saved_leaves = dict(_leaves(_get(saved, field), field))
    new_leaves = dict(_leaves(_get(new, field), field))
    for path in sorted(set(saved_leaves) | set(new_leaves)):
      if _normalised(saved_leaves.get(path)) != _normalised(new_leaves.get(path)):
        return path, saved_leaves.get(path), new_leaves.get(path)
  return None


def _merged(default: Mapping[str, Any], saved: Mapping[str, Any]) -> dict:
  merged = dict(default)
  for key, value in saved.items():
    both_maps = isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
    merged[key] = _merged(merged[key], value) if both_maps else value
  return merged


def _with_defaults(saved: Mapping[str, Any], experiment: str) -> Mapping[str, Any]:
  """The saved config with the fields it lacks (a params.yaml older than them) at the experiment's defaults, which
  that run used."""
  try:
    default = exp_factory.get_exp_config(experiment).as_dict()
  except (KeyError, ValueError):
    return saved
  return _merged(default, saved)


def _start_fresh(model_dir: str) -> str:
  return f'pass a new --model_dir, or delete {model_dir} to start fresh'


def saved_experiment(model_dir: str) -> Optional[str]:
  """The experiment name `tfm train` recorded in model_dir, or None (not a `tfm train` model_dir, or an old one)."""
  path = os.path.join(model_dir, EXPERIMENT_FILE)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    return f.read().strip() or None


def record_experiment(model_dir: str, experiment: str) -> None:
  with tf.io.gfile.GFile(os.path.join(model_dir, EXPERIMENT_FILE), 'w') as f:
    f.write(experiment + '\n')


def check_same_experiment(model_dir: str, experiment: str) -> None:
  """Raises ResumeError when model_dir was trained by `tfm train` under another experiment name."""
  saved = saved_experiment(model_dir)
  if saved and saved != experiment:
    raise ResumeError(f'--model_dir {model_dir} was trained as experiment {saved!r}, not {experiment!r}; pass '
                      f'--experiment={saved}, or {_start_fresh(model_dir)}.')


def check_restart(params, model_dir: str, experiment: str) -> None:
  """Raises ResumeError when model_dir holds a run this config must not resume (see MASK_SHAPING)."""
  if not tf.io.gfile.isdir(model_dir):
    return
  check_same_experiment(model_dir, experiment)
  saved_path = os.path.join(model_dir, PARAMS_FILE)
  if not tf.io.gfile.exists(saved_path):
    return
  try:
    saved = hyperparams.read_yaml_to_params_dict(saved_path).as_dict()
  except Exception as error:  # pylint: disable=broad-except  (any parse failure means the same thing here)
    raise ResumeError(f'{saved_path} is unreadable ({type(error).__name__}); {_start_fresh(model_dir)}.') from None
  change = incompatible_change(_with_defaults(saved, experiment), params.as_dict())
  if change:
    field, before, after = change
    raise ResumeError(f'--model_dir {model_dir} holds a run with {field}={before!r} and this run asks for '
                      f'{after!r}: resuming would restore its weights and masks into another model; '
                      f'{_start_fresh(model_dir)} (nothing was changed).')


def checkpoint_files(prefix: str) -> List[str]:
  return sorted(glob.glob(prefix + '.index') + glob.glob(prefix + '.data-*'))


def _previous_checkpoint(model_dir: str, latest: str) -> Optional[str]:
  state = tf.train.get_checkpoint_state(model_dir)
  paths = [p for p in (state.all_model_checkpoint_paths if state else []) if p != latest]
  paths = [p if os.path.isabs(p) else os.path.join(model_dir, p) for p in paths]
  paths = [p for p in paths if p != latest and tf.io.gfile.exists(p + '.index')]
  return paths[-1] if paths else None


def _unreadable(model_dir: str, latest: str, file: str, error: Exception) -> ResumeError:
  reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
  previous = _previous_checkpoint(model_dir, latest)
  checkpoint_file = os.path.join(model_dir, 'checkpoint')
  if previous:
    fallback = (f'to resume from the previous checkpoint instead, set model_checkpoint_path: '
                f'"{os.path.basename(previous)}" in {checkpoint_file}; or {_start_fresh(model_dir)}')
  else:
    fallback = f'there is no earlier checkpoint to fall back to: {_start_fresh(model_dir)}'
  return ResumeError(f'the latest checkpoint of {model_dir} is unreadable: {file} is truncated or corrupt '
                     f'({reason}); {fallback}.')


def _checkpoints_on_disk(model_dir: str) -> List[str]:
  """Names (ckpt-N) of the checkpoints in model_dir whose index file exists, oldest first."""
  names = [os.path.basename(path)[:-len('.index')] for path in tf.io.gfile.glob(os.path.join(model_dir, '*.index'))]
  return sorted(names, key=lambda name: (len(name), name))


def check_checkpoint_state(model_dir: str) -> None:
  """model_dir's `checkpoint` state file (which checkpoint a restart resumes) must parse and name an existing one.

  TensorFlow treats an unreadable state file, or one naming a deleted checkpoint, as "no checkpoint": the run would
  start again from step 0 and overwrite the checkpoints it has.
  """
  if not tf.io.gfile.isdir(model_dir):
    return
  on_disk = _checkpoints_on_disk(model_dir)
  state_file = os.path.join(model_dir, 'checkpoint')
  if on_disk:
    rewrite = (f'write model_checkpoint_path: "{on_disk[-1]}" (its newest checkpoint; also there: '
               f'{", ".join(on_disk[:-1]) or "none"}) into {state_file}, or {_start_fresh(model_dir)}')
  else:
    rewrite = f'it holds no checkpoint files: delete {state_file}, or {_start_fresh(model_dir)}'
  if not tf.io.gfile.exists(state_file):
    if on_disk:
      raise ResumeError(f'{model_dir} holds checkpoints but no `checkpoint` state file naming the one to resume '
                        f'(a restart would start from step 0 and overwrite them); {rewrite}.')
    return
  try:
    state = tf.train.get_checkpoint_state(model_dir)  # None when the file does not parse
  except Exception:  # pylint: disable=broad-except  (undecodable bytes, ...: damaged all the same)
    state = None
  if state is None or not state.model_checkpoint_path:
    raise ResumeError(f'{state_file} is damaged: it does not name a checkpoint (a restart would start from step 0 '
                      f'and overwrite the checkpoints); {rewrite}.')
  named = state.model_checkpoint_path
  path = named if os.path.isabs(named) else os.path.join(model_dir, named)
  if not tf.io.gfile.exists(path + '.index'):
    raise ResumeError(f'{state_file} names the checkpoint {named!r}, which does not exist (no {path}.index; a '
                      f'restart would start from step 0); {rewrite}.')


def check_train_steps(model_dir: str, latest: Optional[str], train_steps: int) -> None:
  """A restart must have steps left to train: train_steps below the checkpoint's step trains nothing."""
  if not latest:
    return
  try:
    step = int(tf.train.load_variable(latest, GLOBAL_STEP_KEY))
  except Exception:  # pylint: disable=broad-except  (an imported checkpoint has no step counter: it is step 0)
    return
  if train_steps < step:
    raise ResumeError(f'--model_dir {model_dir} holds a run at step {step} and trainer.train_steps={train_steps} '
                      f'leaves nothing to train; set trainer.train_steps above {step} to continue it, use '
                      f'--mode=eval to evaluate it, or {_start_fresh(model_dir)} (nothing was changed).')


def check_latest_checkpoint(model_dir: str) -> Optional[str]:
  """The checkpoint a restart restores (None if there is none), after reading every tensor of it.

  Raises ResumeError naming the unreadable file and how to fall back to the previous checkpoint, or a damaged or
  dangling `checkpoint` state file (check_checkpoint_state).
  """
  check_checkpoint_state(model_dir)
  latest = tf.train.latest_checkpoint(model_dir) if tf.io.gfile.isdir(model_dir) else None
  if not latest:
    return None
  try:
    reader = tf.train.load_checkpoint(latest)
  except Exception as error:  # pylint: disable=broad-except  (the reader raises OpError, IndexError, ValueError, ...)
    raise _unreadable(model_dir, latest, latest + '.index', error) from None
  data_files = [f for f in checkpoint_files(latest) if not f.endswith('.index')]
  try:
    for name in reader.get_variable_to_shape_map():
      reader.get_tensor(name)  # checks each tensor's size and CRC against the index
  except Exception as error:  # pylint: disable=broad-except
    raise _unreadable(model_dir, latest, ' / '.join(data_files) or latest + '.data-*', error) from None
  return latest


def restored_step(model_dir: Optional[str]) -> int:
  """The training step of the checkpoint a restart on model_dir restores (0 when there is none)."""
  latest = tf.train.latest_checkpoint(model_dir) if model_dir and tf.io.gfile.isdir(model_dir) else None
  if not latest:
    return 0
  return int(tf.train.load_variable(latest, GLOBAL_STEP_KEY))
