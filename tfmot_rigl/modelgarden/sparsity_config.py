"""The `task.sparsity` block of the sparse experiments: how the model is sparsified and how its masks evolve.

Framework-light: it needs Model Garden's `hyperparams.Config` and the core algorithms, not the task or the model, so
the task, the CLI and the restart checks can all read it.
"""
import dataclasses
from typing import Dict, List, Optional, Union

from official.modeling import hyperparams

from tfmot_rigl import algorithms
from tfmot_rigl.core import distributions
from tfmot_rigl.keras import initial_masks
from tfmot_rigl.modelgarden import field_checks

METHODS = algorithms.algorithm_names()  # dense, static, set, rigl, snfs, snip, magnitude


@dataclasses.dataclass
class SparsityConfig(hyperparams.Config):
  """How the model is sparsified and how its masks evolve (REFERENCE.md has the exact semantics).

  Attributes:
    method: dense | static | set | rigl | snfs | snip | magnitude.
    sparsity: global fraction of zeros over the sparsified kernels, in [0, 1).
    distribution: per-layer split of the global sparsity: uniform | er | erk.
    erk_power_scale: exponent on ERK's raw densities (1.0 is ERK, smaller is closer to uniform).
    first_layer_dense: keep the first sparsifiable layer dense; None is the reference's default (True for uniform).
    custom_sparsities: per-layer overrides as 'name=sparsity' strings, name being a layer or one kernel of a block
      ('block/kernel', as `tfmot_rigl.model_sparsities` names them); they leave the distribution's budget.
    exclude: names of layers never sparsified (kept dense, not wrapped).
    sparsify_depthwise: also sparsify depthwise kernels (the reference keeps them dense).
    update_frequency: ΔT, steps between mask updates (dynamic methods) or pruning steps (magnitude).
    begin_step: first update step; an int step or a float in [0, 1] meaning a fraction of total_steps.
    end_step: last update step; as begin_step (the paper stops updates at 75% of training).
    drop_fraction: α, the fraction of active connections dropped at an update.
    drop_fraction_anneal: constant | cosine | exponential_k (e.g. exponential_3).
    grow_init: value of newly grown weights: zeros | random_normal | random_uniform | initial_dist, and for RigL
      grad_scale | grad_sign (optionally with a divisor, e.g. random_normal_2).
    initial_acc_scale: RigL: the momentum slot of a new connection starts as if it had seen initial_acc_scale · its
      gradient, downhill for every optimizer (docs/semantics.md); 0 resets it.
    snfs_momentum: SNFS: momentum of the gradient moving average used as grow score.
    block_shape: [b_in, b_out]: masks of Dense kernels (and 1×1 convs) constant over blocks of b_in consecutive
      inputs by b_out outputs, e.g. [4, 1], which TFLite runs block-sparse; sparsities count blocks. [1, 1] is
      unstructured. Other kernels stay unstructured.
    block_norm: a block's drop score: l1 (sum of |w|) or l2 (Euclidean norm).
    initial_sparsity: set, rigl, snfs: gradual (GraNet-style) pruning from the distribution at this global sparsity
      to `sparsity` on a cubic schedule by `prune_end`, drop/grow going on; None (default) is off. magnitude: the
      initial sparsity of TFMOT's PolynomialDecay (None: 0), as Model Garden's pruning project sets it.
    prune_end: when gradual pruning reaches `sparsity`: a step (int) or a fraction of total_steps (float).
    initial_mask: where the first masks come from: random (the paper's start; SNIP and magnitude start dense) |
      magnitude (each layer keeps its largest |W|: the start for a pretrained task.init_checkpoint) | checkpoint
      (the masks of task.init_checkpoint). See docs/semantics.md, "Initial masks".
    seed: seed of the whole run: the initial masks and every random draw of the mask updates, and in `tfm train`
      also the weight initialisation and the training data order (unless task.train_data.seed is set).
    total_steps: number of training steps fractional begin/end refer to; None means trainer.train_steps (filled in
      when the experiment config is validated).
  """
  method: str = 'rigl'
  sparsity: float = 0.8
  distribution: str = 'erk'
  erk_power_scale: float = 1.0
  first_layer_dense: Optional[bool] = None
  custom_sparsities: List[str] = dataclasses.field(default_factory=list)
  exclude: List[str] = dataclasses.field(default_factory=list)
  sparsify_depthwise: bool = False
  update_frequency: int = 100
  begin_step: Union[int, float] = 0
  end_step: Union[int, float] = 0.75
  drop_fraction: float = 0.3
  drop_fraction_anneal: str = 'cosine'
  grow_init: str = 'zeros'
  initial_acc_scale: float = 0.0
  snfs_momentum: float = 0.9
  block_shape: List[int] = dataclasses.field(default_factory=lambda: [1, 1])
  block_norm: str = 'l1'
  initial_sparsity: Optional[float] = None
  prune_end: Union[int, float] = 0.375
  initial_mask: str = 'random'
  seed: int = 0
  total_steps: Optional[int] = None

  def custom_sparsity_map(self) -> Dict[str, float]:
    """`custom_sparsities` as {layer_name: sparsity}; raises ValueError on a malformed entry."""
    overrides = {}
    for entry in _as_list(self.custom_sparsities, 'custom_sparsities'):
      name, sep, value = str(entry).partition('=')
      try:
        if not sep or not name.strip():
          raise ValueError
        sparsity = float(value)
      except ValueError:
        raise ValueError(f"task.sparsity.custom_sparsities entry {entry!r} is not 'layer_name=sparsity'; "
                         "write e.g. ['conv2d=0.5'].") from None
      if name.strip() in overrides and overrides[name.strip()] != sparsity:
        raise ValueError(f'task.sparsity.custom_sparsities gives {name.strip()!r} twice, as '
                         f'{overrides[name.strip()]} and as {sparsity}; keep the one you mean.')
      overrides[name.strip()] = sparsity
    return overrides

  def algorithm(self) -> algorithms.SparseAlgorithm:
    """The core algorithm object for `method`; knobs of other methods are ignored by `make_algorithm`."""
    return algorithms.make_algorithm(
        self.method, update_frequency=self.update_frequency, begin_step=self.begin_step, end_step=self.end_step,
        drop_fraction=self.drop_fraction, drop_fraction_anneal=self.drop_fraction_anneal, grow_init=self.grow_init,
        initial_acc_scale=self.initial_acc_scale, momentum=self.snfs_momentum,
        block_shape=tuple(_as_list(self.block_shape, 'block_shape')), block_norm=self.block_norm,
        initial_sparsity=self.initial_sparsity, prune_end=self.prune_end)

  def prune_kwargs(self) -> dict:
    """Keyword arguments of `tfmot_rigl.prune_sparse` (all but the model and the algorithm)."""
    return dict(sparsity=self.sparsity, distribution=self.distribution, erk_power_scale=self.erk_power_scale,
                custom_sparsities=self.custom_sparsity_map() or None, exclude=tuple(self.exclude),
                first_layer_dense=self.first_layer_dense, sparsify_depthwise=self.sparsify_depthwise,
                seed=self.seed, total_steps=self.total_steps, initial_mask=self.initial_mask)

  def validate(self):
    """Raises ValueError with one sentence naming the bad field and what to use instead."""
    super().validate()
    if self.method not in METHODS:
      raise ValueError(f"task.sparsity.method={self.method!r} is unknown; use one of {', '.join(METHODS)}.")
    distributions.check_sparsity(self.sparsity, 'task.sparsity.sparsity')
    field_checks.check_seed(self.seed, 'task.sparsity.seed')
    if self.distribution not in distributions.DISTRIBUTIONS:
      raise ValueError(f"task.sparsity.distribution={self.distribution!r} is unknown; use one of "
                       f"{', '.join(distributions.DISTRIBUTIONS)}.")
    if not _is_number(self.erk_power_scale) or self.erk_power_scale < 0:
      raise ValueError(f'task.sparsity.erk_power_scale={self.erk_power_scale!r} must be a number >= 0 (1.0 is ERK).')
    if self.first_layer_dense not in (None, True, False):
      raise ValueError(f'task.sparsity.first_layer_dense={self.first_layer_dense!r} must be true, false or null.')
    for name, value in self.custom_sparsity_map().items():
      distributions.check_sparsity(value, f'task.sparsity.custom_sparsities[{name}]')
    _as_list(self.exclude, 'exclude')
    for what in ('begin_step', 'end_step', 'prune_end'):
      value = getattr(self, what)
      if not _is_number(value) or value < 0 or (isinstance(value, float) and value > 1 and not value.is_integer()):
        raise ValueError(f'task.sparsity.{what}={value!r} must be a step number (int) or a fraction of training '
                         'in [0, 1] (float).')
    if self.total_steps is not None and (
        isinstance(self.total_steps, bool) or not isinstance(self.total_steps, int) or self.total_steps <= 0):
      raise ValueError(f'task.sparsity.total_steps={self.total_steps!r} must be a positive int or null.')
    try:
      algorithm = self.algorithm()
      initial_masks.check_initial_mask(self.initial_mask, algorithm)
      fractions = [v for v in (self.begin_step, self.end_step, self.prune_end if algorithm.gradual else 0)
                   if isinstance(v, float)]
      if self.total_steps or not fractions:
        algorithm.window(self.total_steps)
      if algorithm.gradual and self.initial_sparsity > self.sparsity:
        raise ValueError(f'initial_sparsity={self.initial_sparsity} is above sparsity={self.sparsity}; gradual '
                         'pruning starts denser than the target: choose initial_sparsity <= sparsity.')
    except ValueError as error:
      raise ValueError(f'task.sparsity: {error}') from None


def _is_number(value) -> bool:
  return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_list(value, field: str) -> list:
  # A bare string from `--params_override=task.sparsity.exclude=conv` would otherwise iterate by character.
  if isinstance(value, (list, tuple)):
    return list(value)
  raise ValueError(f'task.sparsity.{field}={value!r} must be a list, e.g. [{value!r}].')
