"""tfmot_rigl: sparse-from-scratch training (RigL, SET, SNFS, SNIP, static, magnitude) for TF Model Optimization.

TFMOT supports Keras 2 only, so this package selects tf_keras (TF_USE_LEGACY_KERAS=1) before TensorFlow is imported;
import tfmot_rigl before tensorflow, or set the variable yourself. The public names below are loaded on first use,
so `import tfmot_rigl` (and the `tfm` command's help) does not pay for importing TensorFlow.

Model Garden: `import tfmot_rigl.modelgarden` is the registry import (as `official.vision.registry_imports` is
Model Garden's). After `import tfmot_rigl`, importing Model Garden's `exp_factory` registers the sparse experiments
too (see tfmot_rigl._registration), so `exp_factory.get_exp_config("resnet_rigl")` works either way.
"""
import importlib
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from tfmot_rigl import _registration  # noqa: E402

_registration.install()

__version__ = "0.1.0"

_EXPORTS = {
    "tfmot_rigl.algorithms": ["SET", "SNFS", "SNIP", "Dense", "Magnitude", "RigL", "SparseAlgorithm", "Static",
                              "algorithm_names", "make_algorithm"],
    "tfmot_rigl.core.distributions": ["layer_sparsities"],
    "tfmot_rigl.keras": ["SparseSchedule", "SparseWrapper", "apply_snip", "load_model", "load_pretrained",
                         "model_sparsities", "prune_sparse", "sparse_scope", "sparse_wrappers", "strip_sparse",
                         "wrap_optimizer"],
    "tfmot_rigl.keras.accounting": ["describe_model", "report"],
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name):
  if name in _MODULE_OF:
    value = getattr(importlib.import_module(_MODULE_OF[name]), name)
    globals()[name] = value
    return value
  raise AttributeError(f"module 'tfmot_rigl' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(__all__))
