"""`load_pretrained`: a dense or sparse checkpoint's weights (and masks) into a sparsified model.

A checkpoint names each variable by its path in the object graph of what was saved (`model/layer_with_weights-0/
kernel`). Wrapping a layer for pruning inserts one hop, `.layer`, into the path of its weights, so a dense checkpoint
does not restore into a sparsified model with `tf.train.Checkpoint.read` (Model Garden's `initialize` fails with
"objects not bound to checkpointed values"), nor a sparse one into a model wrapped differently. Here both object
graphs — the checkpoint's (its TrackableObjectGraph) and the model's — are walked, every path of every variable is
written without wrapper hops, and variables are paired by a common path. The model's layer variables (kernels, biases,
batch-norm statistics) must all be found with their shapes; wrapper bookkeeping (masks, step counters, algorithm
state) is taken from the checkpoint only when `initial_mask` is "checkpoint". Everything is checked before the first
variable is written, so a checkpoint that does not fit leaves the model as it was.
"""
import collections
import dataclasses
from typing import Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Set

import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

from tfmot_rigl.keras import initial_masks

_WRAPPER_CHILDREN = {"layer", "mask", "pruning_step"}  # what marks a pruning wrapper in either object graph
_PATHS_PER_NODE = 16  # aliases of one object (layer-N and layer_with_weights-N, lists of weights): enough to pair


class PretrainedError(ValueError):
  """A checkpoint that cannot initialise the model; the message is one line naming the first thing that does not
  fit and what to do."""


@dataclasses.dataclass
class LoadPlan:
  """What `plan_load` found: variables to assign, masks to take, and what stays at its initialisation."""
  checkpoint: str
  assignments: List[tuple]  # (model variable, checkpoint key)
  masks: Dict[int, object]  # id(mask variable) -> checkpoint value (initial_mask=checkpoint)
  left_at_init: List[str]  # names of layer variables outside the loaded part (e.g. a new head)
  wrappers: list

  def line(self) -> str:
    left = (f'; {len(self.left_at_init)} left at their initialisation ({_short(self.left_at_init)})'
            if self.left_at_init else '')
    kinds = sorted({_start_of(w) for w in self.wrappers}) or ['none (dense model)']
    return (f'init checkpoint {self.checkpoint}: loaded {len(self.assignments)} variables{left}; first masks: '
            f'{", ".join(kinds)}.')


def _start_of(wrapper) -> str:
  kind = initial_masks.initial_mask_of(wrapper)
  if kind == 'random' and not getattr(wrapper, 'algorithm', None):
    return 'dense (gradual magnitude pruning)'
  if kind == 'random' and wrapper.algorithm.name == 'snip':
    return "dense until SNIP's one shot"
  return kind


def checkpoint_path(path: str) -> str:
  """The checkpoint prefix of `path` (a directory's latest checkpoint, or a prefix), or a PretrainedError."""
  if path and tf.io.gfile.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    if latest:
      return latest
    raise PretrainedError(f'init checkpoint {path} is a directory with no checkpoint in it; pass the model_dir of a '
                          'finished run or a checkpoint prefix such as DIR/ckpt-1000.')
  if not path or not tf.io.gfile.exists(path + '.index'):
    raise PretrainedError(f'init checkpoint {path!r} does not exist (no {path}.index); pass a model_dir or a '
                          'checkpoint prefix such as DIR/ckpt-1000.')
  return path


def _short(names: List[str], limit: int = 4) -> str:
  return ', '.join(names[:limit]) + (f', ... ({len(names)} in all)' if len(names) > limit else '')


def _name(variable) -> str:
  return variable.name.split(':')[0]


def _paths(roots: Mapping[str, Hashable], children: Callable, is_leaf: Callable) -> Dict[Hashable, Set[tuple]]:
  """{leaf: every path to it from `roots`, without the `.layer` hop of pruning wrappers}."""
  found = collections.defaultdict(set)
  expanded = collections.Counter()
  stack = [(node, (name,), frozenset()) for name, node in roots.items()]
  while stack:
    node, path, above = stack.pop()
    if is_leaf(node):
      found[node].add(path)
      continue
    if node in above or expanded[node] >= _PATHS_PER_NODE:
      continue
    expanded[node] += 1
    named = children(node)
    wrapper = _WRAPPER_CHILDREN <= set(named)
    for name, child in named.items():
      stack.append((child, path if wrapper and name == 'layer' else path + (name,), above | {node}))
  return found


def _checkpoint_paths(reader) -> Dict[str, Set[tuple]]:
  """{checkpoint key: its paths} from the checkpoint's object graph."""
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor('_CHECKPOINTABLE_OBJECT_GRAPH'))
  keys = {index: attribute.checkpoint_key for index, node in enumerate(graph.nodes)
          for attribute in node.attributes if attribute.name == 'VARIABLE_VALUE'}
  roots = {child.local_name: child.node_id for child in graph.nodes[0].children}
  by_node = _paths(roots, lambda i: {c.local_name: c.node_id for c in graph.nodes[i].children}, keys.__contains__)
  return {keys[node]: paths for node, paths in by_node.items()}


def _model_paths(roots: Mapping[str, object]) -> Dict[int, Set[tuple]]:
  """{id(variable): its paths} in the model's object graph (as a checkpoint of `roots` would write it)."""
  objects = {}

  def children(node_id):
    named = tf.train.TrackableView.children(objects[node_id])
    for child in named.values():
      objects[id(child)] = child
    return {name: id(child) for name, child in named.items()}

  for root in roots.values():
    objects[id(root)] = root
  return _paths({name: id(root) for name, root in roots.items()}, children,
                lambda node_id: isinstance(objects[node_id], tf.Variable))


def _wrappers_in(model) -> list:
  return [layer for layer in model.submodules if isinstance(layer, pruning_wrapper.PruneLowMagnitude)]


def plan_load(model, path: str, roots: Optional[Mapping[str, object]] = None,
              required: Optional[Iterable[tf.Variable]] = None) -> LoadPlan:
  """Checks that checkpoint `path` can initialise `model`, reading no weight; a PretrainedError if not.

  Args:
    model: the (sparsified) model.
    path: a checkpoint prefix or a directory holding checkpoints.
    roots: {name: object} as the checkpoint was saved, e.g. {'model': model} for `tf.train.Checkpoint(model=...)`
      (the default also accepts `model.save_weights` checkpoints, whose root is the model itself).
    required: the variables to load (default: every layer variable of `model`); others stay as they are.
  """
  path = checkpoint_path(path)
  reader = tf.train.load_checkpoint(path)
  shapes = reader.get_variable_to_shape_map()
  ckpt_paths = _checkpoint_paths(reader)
  by_path = {p: key for key, paths in ckpt_paths.items() for p in paths}
  roots = dict(roots) if roots else dict(tf.train.TrackableView.children(model), model=model)
  model_paths = _model_paths(roots)
  wrappers = _wrappers_in(model)
  bookkeeping = {id(v) for w in wrappers for v in w.weights} - {id(v) for w in wrappers for v in w.layer.weights}
  layer_variables = [v for v in model.weights if id(v) not in bookkeeping]
  wanted = {id(v) for v in (required if required is not None else layer_variables)}

  def key_of(variable):
    for p in sorted(model_paths.get(id(getattr(variable, '_variable', variable)), ()) |
                    model_paths.get(id(variable), set())):
      if p in by_path:
        return by_path[p]
    return None

  assignments, missing = [], []
  for variable in layer_variables:
    if id(variable) not in wanted:
      continue
    key = key_of(variable)
    if key is None:
      missing.append(_name(variable))
      continue
    if list(shapes[key]) != variable.shape.as_list():
      raise PretrainedError(
          f'init checkpoint {path} does not fit this model: {_name(variable)} has shape {variable.shape.as_list()} '
          f'here, {shapes[key]} in the checkpoint ({key.split("/.ATTRIBUTES")[0]}); use a checkpoint of this '
          'network, or init_checkpoint_modules=backbone for another head.')
    assignments.append((variable, key))
  if missing:
    raise PretrainedError(
        f'init checkpoint {path} lacks {len(missing)} of the {len(wanted)} variables to load: {_short(missing)}; '
        'use a checkpoint of this network (a tfm train run of the same experiment, Model Garden\'s trainer, or '
        'tfm import-checkpoint), or init_checkpoint_modules=backbone to load the backbone alone.')
  masks = _checkpoint_masks(path, reader, shapes, wrappers, wanted, key_of)
  left = [_name(v) for v in layer_variables if id(v) not in wanted]
  return LoadPlan(path, assignments, masks, left, wrappers)


def _checkpoint_masks(path, reader, shapes, wrappers, wanted, key_of) -> Dict[int, object]:
  """The masks of wrappers with initial_mask='checkpoint' whose layer is loaded, checked against their sparsity."""
  masks, entries, found = {}, [], 0
  for wrapper in wrappers:
    if initial_masks.initial_mask_of(wrapper) != 'checkpoint':
      continue
    if not all(id(v) in wanted for v in wrapper.layer.weights):
      continue  # a layer not loaded (a new head) keeps its own first mask
    for index, (weight, mask, _) in enumerate(wrapper.pruning_vars):
      key = key_of(mask)
      if key is None:  # a layer the checkpoint's run kept dense: all ones (the sparsity check below counts it)
        value = tf.ones(mask.shape, mask.dtype)
      elif list(shapes[key]) != mask.shape.as_list():
        raise PretrainedError(f'init checkpoint {path}: the mask for {_name(weight)} has shape {shapes[key]}, the '
                              f'layer {mask.shape.as_list()}; use a checkpoint of this network.')
      else:
        value = reader.get_tensor(key)
        found += 1
      entries.append((wrapper, index, value, _name(weight)))
      masks[id(mask)] = value
  if entries and not found:
    raise PretrainedError(
        f'initial_mask=checkpoint, but init checkpoint {path} holds no masks (a dense checkpoint; first layer without '
        f'one: {entries[0][3]}); use initial_mask=magnitude, or a checkpoint of a sparse run of this network.')
  try:
    initial_masks.check_checkpoint_sparsity(entries)
  except ValueError as error:
    raise PretrainedError(str(error)) from None
  return masks


def apply_plan(plan: LoadPlan) -> None:
  """Assigns what `plan_load` found, then sets every wrapper's first masks from the loaded weights."""
  reader = tf.train.load_checkpoint(plan.checkpoint)
  for variable, key in plan.assignments:
    variable.assign(tf.cast(reader.get_tensor(key), variable.dtype))
  initial_masks.reset_masks(plan.wrappers, plan.masks, weights_loaded=True)


def load_pretrained(model, path: str, roots: Optional[Mapping[str, object]] = None,
                    required: Optional[Iterable[tf.Variable]] = None) -> LoadPlan:
  """Initialises a model made by `prune_sparse` from a dense or sparse checkpoint; returns what was loaded.

  The layers' weights come from the checkpoint; the first masks from each wrapper's `initial_mask` (random masks
  applied to the loaded weights, the largest loaded |W|, or the checkpoint's masks). Checkpoints written by
  `tf.train.Checkpoint(model=...)`, `model.save_weights` and Model Garden's trainer (`tfm train`) are read. Raises
  PretrainedError (one line) and changes nothing if the checkpoint does not fit.
  """
  plan = plan_load(model, path, roots, required)
  apply_plan(plan)
  return plan
