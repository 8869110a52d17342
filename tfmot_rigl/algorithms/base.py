"""The shared base of every sparse-training algorithm.

An algorithm is a small, serialisable description of *how* masks evolve: its update window, its drop-fraction
anneal, how it scores connections to drop and to grow, and how it initialises new ones. It holds no variables; the
Keras layer (tfmot_rigl.keras) owns masks and state and calls these methods inside the train step.
"""
import dataclasses
import re
from typing import Optional

import tensorflow as tf

from tfmot_rigl.core import blocks
from tfmot_rigl.core import distributions
from tfmot_rigl.core import gradual
from tfmot_rigl.core import masks as mask_math
from tfmot_rigl.core import schedule

_REGISTRY = {}
_GROW_INIT = re.compile(r"^(zeros|random_normal|random_uniform|initial_dist)(?:_(\d+(?:\.\d+)?))?$")


def register(cls):
  """Class decorator: makes an algorithm available to `make_algorithm(cls.name)` and to deserialisation."""
  _REGISTRY[cls.name] = cls
  return cls


def algorithm_names():
  return tuple(_REGISTRY)


def make_algorithm(method: str, **knobs) -> "SparseAlgorithm":
  """The algorithm for a method name (dense|static|set|rigl|snfs|snip|magnitude), built from keyword knobs.

  Knobs that belong to other methods (e.g. drop_fraction for static) are ignored, so one config with every knob can
  switch between methods by its method name alone; a knob no method knows is an error.
  """
  if method not in _REGISTRY:
    raise ValueError(f"Unknown sparse training method {method!r}; use one of {', '.join(_REGISTRY)}.")
  knobs = tfmot_spelling(knobs, "make_algorithm")
  known = {name: set(cls().get_config()) for name, cls in _REGISTRY.items()}
  unknown = sorted(set(knobs) - set().union(*known.values()))
  if unknown:
    raise ValueError(f"Unknown sparse training knob(s) {unknown}; valid knobs are "
                     f"{sorted(set().union(*known.values()))}.")
  return _REGISTRY[method](**{k: v for k, v in knobs.items() if k in known[method]})


def as_algorithm(algorithm) -> "SparseAlgorithm":
  """What prune_sparse's `algorithm` argument means: an algorithm object, a method name, or None for RigL()."""
  if algorithm is None:
    return make_algorithm("rigl")
  if isinstance(algorithm, str):
    return make_algorithm(algorithm)
  if not isinstance(algorithm, SparseAlgorithm):
    raise ValueError(f"algorithm={algorithm!r} is not a sparse training algorithm; pass e.g. tfmot_rigl.RigL() or a "
                     f"method name ({', '.join(algorithm_names())}).")
  return algorithm


def tfmot_spelling(knobs: dict, who: str) -> dict:
  """TFMOT's `block_size` (prune_low_magnitude's name, same orientation: [in, out] of a Dense kernel) is block_shape."""
  if "block_size" not in knobs:
    return knobs
  knobs = dict(knobs)
  if "block_shape" in knobs:
    raise TypeError(f"{who} got both block_size={knobs['block_size']!r} (TFMOT's name) and block_shape="
                    f"{knobs['block_shape']!r}; they are the same knob: pass one.")
  knobs["block_shape"] = knobs.pop("block_size")
  return knobs


def deserialize(config) -> "SparseAlgorithm":
  if isinstance(config, SparseAlgorithm):
    return config
  return make_algorithm(config["method"], **config.get("config", {}))


def serialize(algorithm: "SparseAlgorithm") -> dict:
  return {"method": algorithm.name, "config": algorithm.get_config()}


@dataclasses.dataclass
class LayerUpdate:
  """What an algorithm sees of one layer at a mask update (all tensors of the kernel's shape)."""
  weight: tf.Tensor           # current kernel, already masked
  mask: tf.Tensor             # current 0/1 mask
  grad: tf.Tensor             # dense gradient of this batch, all-reduced across replicas
  state: dict                 # the algorithm's per-layer state tensors (e.g. SNFS gradient EMA)
  seed: tf.Tensor             # int32 [2] stateless seed unique to (algorithm seed, layer, step)
  initial_weight: Optional[tf.Tensor] = None  # kernel at initialisation, for grow_init=initial_dist
  step: Optional[tf.Tensor] = None            # the optimizer's step of this update (int64 scalar)
  # Gradual pruning: the active units (entries, or blocks) this layer keeps after this update; None keeps the count.
  active_count: Optional[tf.Tensor] = None


class _IgnoresOtherMethodsKnobs(type):
  """Constructing an algorithm class treats knobs as `make_algorithm` does: one behaviour for both.

  A knob of another method (e.g. `SNIP(begin_step=0)`, `Static(drop_fraction=0.3)`) is ignored, so code written
  once with every knob runs with every class; a knob no method knows raises a TypeError naming this class.
  """

  def __call__(cls, *args, **knobs):
    knobs = tfmot_spelling(knobs, f"{cls.__name__}()")
    if knobs and _REGISTRY:
      own = set(type.__call__(cls).get_config())
      every = set().union(*(set(type.__call__(other).get_config()) for other in _REGISTRY.values()))
      unknown = sorted(set(knobs) - own - every)
      if unknown:
        raise TypeError(f"{cls.__name__}() got unknown knob(s) {unknown}; {cls.__name__}'s knobs are "
                        f"{sorted(own)} (knobs of the other methods are accepted and ignored).")
      knobs = {name: value for name, value in knobs.items() if name in own}
    return type.__call__(cls, *args, **knobs)


class SparseAlgorithm(metaclass=_IgnoresOtherMethodsKnobs):
  """Base class. Subclasses set `name` and override only what differs (normally `grow_scores`)."""

  name = None
  #: masks change during training (SET, RigL, SNFS); False for one-shot / fixed masks.
  dynamic = True
  #: this method uses tfmot_rigl's own wrapper and masks (False for dense and TFMOT magnitude pruning).
  uses_masks = True

  def __init__(self, update_frequency: int = 100, begin_step=0, end_step=0.75, drop_fraction: float = 0.3,
               drop_fraction_anneal: str = "cosine", grow_init: str = "zeros", seed_offset: int = 0,
               block_shape=(1, 1), block_norm: str = "l1", initial_sparsity: Optional[float] = None,
               prune_end=0.375):
    schedule.check_anneal(drop_fraction_anneal)
    if not 0.0 <= drop_fraction <= 1.0:
      raise ValueError(f"drop_fraction={drop_fraction!r} is outside [0, 1]; it is the fraction of active "
                       "connections replaced at each update, e.g. 0.3.")
    self.update_frequency = update_frequency
    self.begin_step = begin_step
    self.end_step = end_step
    self.drop_fraction = drop_fraction
    self.drop_fraction_anneal = drop_fraction_anneal
    self.grow_init = self._check_grow_init(grow_init)
    self.seed_offset = seed_offset
    # Masks of Dense kernels (and 1×1 convs) constant over blocks of (b_in, b_out) entries; see core/blocks.py.
    self.block_shape = blocks.check_block_shape(block_shape)
    self.block_norm = blocks.check_block_norm(block_norm)
    # Gradual (GraNet-style) pruning from the distribution at `initial_sparsity` to the target by `prune_end`
    # (core/gradual.py); None trains at the target sparsity from the start.
    self.initial_sparsity = gradual.check_initial_sparsity(initial_sparsity)
    self.prune_end = prune_end
    if isinstance(update_frequency, bool) or not isinstance(update_frequency, int) or update_frequency <= 0:
      raise ValueError(f"update_frequency={update_frequency!r} must be a positive number of steps, e.g. 100.")

  # --- configuration -------------------------------------------------------------------------------------------
  _grow_init_names = ("zeros", "random_normal", "random_uniform", "initial_dist")

  def _check_grow_init(self, grow_init):
    base = re.sub(r"_\d+(?:\.\d+)?$", "", str(grow_init))
    if base not in self._grow_init_names:
      raise ValueError(f"Unknown grow_init {grow_init!r} for {self.name}; use one of "
                       f"{', '.join(self._grow_init_names)} (optionally with a divisor, e.g. random_normal_2).")
    divisor = str(grow_init)[len(base) + 1:]
    if divisor and float(divisor) == 0:  # new weights would be x / 0: inf or nan
      raise ValueError(f"grow_init={grow_init!r} divides by 0; use a divisor > 0 (e.g. {base}_2) or plain {base!r}.")
    return grow_init

  def get_config(self) -> dict:
    return {"update_frequency": self.update_frequency, "begin_step": self.begin_step, "end_step": self.end_step,
            "drop_fraction": self.drop_fraction, "drop_fraction_anneal": self.drop_fraction_anneal,
            "grow_init": self.grow_init, "seed_offset": self.seed_offset, "block_shape": list(self.block_shape),
            "block_norm": self.block_norm, "initial_sparsity": self.initial_sparsity, "prune_end": self.prune_end}

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  def __repr__(self):
    knobs = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
    return f"{type(self).__name__}({knobs})"

  def __eq__(self, other):
    return type(self) is type(other) and self.get_config() == other.get_config()

  def window(self, total_steps: Optional[int] = None):
    """(begin_step, end_step) as steps, resolving fractions of `total_steps`."""
    begin = schedule.resolve_step(self.begin_step, total_steps, "begin_step")
    end = schedule.resolve_step(self.end_step, total_steps, "end_step")
    schedule.check_window(begin, end, self.update_frequency)
    if self.gradual:
      self.prune_window(total_steps, (begin, end))
    return begin, end

  @property
  def gradual(self) -> bool:
    """Whether masks start at `initial_sparsity` and are pruned to the target by `prune_end`."""
    return self.dynamic and self.initial_sparsity is not None

  def prune_window(self, total_steps: Optional[int] = None, window=None):
    """(begin_step, prune_end) as steps: the cubic runs between them; an update must fall on or after prune_end."""
    begin, end = window or self.window(total_steps)
    prune_end = schedule.resolve_step(self.prune_end, total_steps, "prune_end")
    last_update = end // self.update_frequency * self.update_frequency
    if not begin <= prune_end <= last_update:
      raise ValueError(f"prune_end={self.prune_end!r} is step {prune_end}, outside the update window's steps {begin} "
                       f"to {last_update} (the last update step by end_step={self.end_step!r}): the target sparsity "
                       "is reached at the first update on or after prune_end, so choose prune_end between begin_step "
                       "and end_step.")
    return begin, prune_end

  def mask_units(self, shape) -> int:
    """What a layer's sparsity counts: its entries, or its blocks when masked in blocks."""
    if self.in_blocks(shape):
      grid = blocks.grid_shape(shape, self.block_shape)
      return grid[0] * grid[1]
    return int(tf.TensorShape(shape).num_elements())

  # --- masks -----------------------------------------------------------------------------------------------------
  def in_blocks(self, shape) -> bool:
    """Whether a kernel of `shape` is masked in blocks of `block_shape`: a 2-D view they tile (core/blocks.py)."""
    return blocks.applies(shape, self.block_shape) and blocks.tiles(shape, self.block_shape)

  def initial_mask(self, shape, sparsity: float, seed) -> tf.Tensor:
    """Mask before training: uniformly random at the layer's sparsity (SNIP overrides: dense until its one shot).

    In blocks, the sparsity counts blocks: floor(s · number of blocks) blocks are inactive.
    """
    if self.in_blocks(shape):
      grid = mask_math.random_mask(blocks.grid_shape(shape, self.block_shape), sparsity, seed)
      return blocks.expand(grid, self.block_shape, shape)
    return mask_math.random_mask(shape, sparsity, seed)

  def keep_largest(self, scores, sparsity: float, seed, norm: str = "l1") -> tf.Tensor:
    """A one-shot float mask keeping the largest `scores` at `sparsity` (SNIP): per block, by `norm`, in blocks."""
    shape = scores.shape
    if self.in_blocks(shape):
      grid = blocks.grid_shape(shape, self.block_shape)
      keep = distributions.nonzeros(grid[0] * grid[1], sparsity)
      kept = mask_math.top_k_mask(blocks.reduce_blocks(scores, self.block_shape, norm), keep, seed)
      return blocks.expand(kept, self.block_shape, shape)
    return mask_math.top_k_mask(scores, distributions.nonzeros(shape.num_elements(), sparsity), seed)

  def magnitude_mask(self, weight, sparsity: float, seed) -> tf.Tensor:
    """Mask keeping the largest |W| at `sparsity` (initial_mask='magnitude'); in blocks, the largest `block_norm`.

    The scores a drop step ranks active connections by, so a pretrained layer loses its smallest weights only.
    """
    return self.keep_largest(tf.abs(tf.cast(weight, tf.float32)), sparsity, seed, norm=self.block_norm)

  def state_names(self):
    """Names of per-layer state tensors (kernel-shaped) this algorithm keeps; created by the Keras wrapper."""
    return ()

  def update_state(self, state: dict, grad: tf.Tensor) -> dict:
    """Called every training step with the all-reduced gradient; returns new state values."""
    return state

  def drop_scores(self, layer: LayerUpdate) -> tf.Tensor:
    """Active connections with the largest score are kept: |W ⊙ M|."""
    return tf.abs(layer.weight * layer.mask)

  def grow_scores(self, layer: LayerUpdate) -> tf.Tensor:
    raise NotImplementedError

  def update_mask(self, layer: LayerUpdate, drop_fraction):
    """(new_mask, new_connections) of one layer: drop the smallest, grow the highest-scoring of the rest.

    With `layer.active_count` (gradual pruning) the layer first keeps its largest drop scores down to that count.

    In blocks, the same update runs on the block grid: a block's drop score is the `block_norm` of its entries'
    drop scores, its grow score their sum, and whole blocks are dropped and grown.
    """
    drop_scores, grow_scores = self.drop_scores(layer), self.grow_scores(layer)
    if not self.in_blocks(layer.mask.shape):
      return mask_math.drop_and_grow(layer.mask, drop_scores, grow_scores, drop_fraction, layer.seed,
                                     layer.active_count)
    block_shape, shape = self.block_shape, layer.mask.shape
    new_mask, new_connections = mask_math.drop_and_grow(
        blocks.block_mask(layer.mask, block_shape), blocks.reduce_blocks(drop_scores, block_shape, self.block_norm),
        blocks.reduce_blocks(grow_scores, block_shape), drop_fraction, layer.seed, layer.active_count)
    return blocks.expand(new_mask, block_shape, shape), blocks.expand(new_connections, block_shape, shape)

  # --- new connections -------------------------------------------------------------------------------------------
  def grow_values(self, layer: LayerUpdate) -> tf.Tensor:
    """Values given to new connections (`grow_init`), optionally divided by the number after the name."""
    match = _GROW_INIT.match(self.grow_init)
    kind, divisor = match.group(1), float(match.group(2) or 1.0)
    weight, seed = layer.weight, layer.seed + 7
    if kind == "zeros":
      return tf.zeros_like(weight)
    active = layer.mask > 0.5
    count = tf.maximum(tf.reduce_sum(tf.cast(active, weight.dtype)), 1.0)
    if kind == "random_normal":
      # Scaled to the layer's current (active) weights, so new connections start at the layer's typical size.
      mean = tf.reduce_sum(tf.where(active, weight, 0.0)) / count
      std = tf.sqrt(tf.reduce_sum(tf.where(active, tf.square(weight - mean), 0.0)) / count)
      return tf.random.stateless_normal(tf.shape(weight), seed, stddev=std, dtype=weight.dtype) / divisor
    if kind == "random_uniform":
      bound = tf.reduce_sum(tf.where(active, tf.abs(weight), 0.0)) / count
      return tf.random.stateless_uniform(tf.shape(weight), seed, -bound, bound, dtype=weight.dtype) / divisor
    # initial_dist: values drawn (by a seeded shuffle) from the layer's weights at initialisation.
    flat = tf.reshape(layer.initial_weight, [-1])
    shuffled = tf.gather(flat, tf.argsort(tf.random.stateless_uniform(tf.shape(flat), seed)))
    return tf.reshape(shuffled, tf.shape(weight)) / divisor

  def new_slot_values(self, layer: LayerUpdate, slot: tf.Tensor, kind: str = "other",
                      learning_rate=None) -> tf.Tensor:
    """Optimizer slot values (momentum, Adam m/v, …) of new connections: zero.

    `kind` says what the slot holds (tfmot_rigl.keras.slots.SLOT_KINDS): "first_moment" (Adam's m: an average of
    g), "velocity" (SGD momentum in tf_keras: m ← μm − lr·g, added to the weight), "momentum_step" (RMSprop
    momentum: mom ← μ·mom + lr·g/√ms, subtracted from the weight), or "other" (second moments, accumulators).
    `learning_rate` is the optimizer's current one.
    """
    del layer, kind, learning_rate
    return tf.zeros_like(slot)

  @property
  def needs_initial_weight(self):
    return self.grow_init.startswith("initial_dist")
