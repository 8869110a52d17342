"""Subclassed tf_keras models: find the layers they hold as attributes (nested too) and swap them in place.

A subclassed model has no graph of layers to clone (TFMOT's `prune_low_magnitude` and `strip_pruning` refuse it).
Its `call` reaches layers through attributes (`self.conv1`, `self.blocks[2].dense`), so replacing those attributes
with wrappers — and wrappers with their layers again when stripping — changes what `call` runs, without cloning.
"""
import tf_keras as keras


def _tracked_children(node):
  """(container, key, value) for every attribute of `node` Keras tracks, and for each item of tracked lists/dicts.

  `container` is `node` itself (key: attribute name) or the list/dict (key: index/key) to assign a replacement to.
  """
  names = getattr(node, "_self_unconditional_dependency_names", {})
  for name in list(names):
    value = getattr(node, name, None)
    if isinstance(value, keras.layers.Layer):
      yield node, name, value
    elif hasattr(value, "items") and not isinstance(value, keras.layers.Layer):
      yield from ((value, key, item) for key, item in list(value.items()) if isinstance(item, keras.layers.Layer))
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "ListWrapper":
      yield from ((value, index, item) for index, item in enumerate(list(value))
                  if isinstance(item, keras.layers.Layer))


def leaf_layers(model, is_leaf):
  """The layers of a subclassed `model` in attribute order: those `is_leaf` accepts and those without sublayers.

  Layers reached twice (shared) are yielded once.
  """
  seen = set()

  def walk(node):
    for _, _, layer in _tracked_children(node):
      if id(layer) in seen:
        continue
      seen.add(id(layer))
      if is_leaf(layer) or not list(layer._flatten_layers(include_self=False, recursive=False)):
        yield layer
      else:
        yield from walk(layer)

  yield from walk(model)


def replace_layers(model, replacements) -> None:
  """Assigns `replacements[id(layer)]` wherever `model` (or a layer it holds) holds `layer` as an attribute.

  Raises ValueError naming the layers it could not reach (held in a tuple, or only inside `call`).
  """
  done, seen = set(), set()

  def walk(node):
    if id(node) in seen:
      return
    seen.add(id(node))
    for container, key, layer in list(_tracked_children(node)):
      if id(layer) in replacements:
        if isinstance(container, tuple):
          continue
        if container is node:
          setattr(node, key, replacements[id(layer)])
        else:
          container[key] = replacements[id(layer)]
        done.add(id(layer))
      else:
        walk(layer)

  walk(model)
  missing = [layer.name for layer_id, layer in _originals(replacements).items() if layer_id not in done]
  if missing:
    raise ValueError(f"Layer(s) {missing} of {model.name!r} are not held as attributes (or in lists/dicts of "
                     "attributes) that can be replaced; hold each layer as `self.name = layer` in __init__.")


def _originals(replacements):
  return {layer_id: getattr(replacement, "layer", replacement) for layer_id, replacement in replacements.items()}
