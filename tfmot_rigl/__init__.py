"""tfmot_rigl: sparse-from-scratch training (RigL, SET, SNFS, SNIP, static, magnitude) for TF Model Optimization.

TFMOT supports Keras 2 only, so this package selects tf_keras (TF_USE_LEGACY_KERAS=1) before TensorFlow is imported;
import tfmot_rigl before tensorflow, or set the variable yourself.
"""
import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

# pylint: disable=g-import-not-at-top,wrong-import-position
from tfmot_rigl.algorithms import (SET, SNFS, SNIP, Dense, Magnitude, RigL, SparseAlgorithm, Static,
                                   algorithm_names, make_algorithm)
from tfmot_rigl.core.distributions import layer_sparsities
from tfmot_rigl.keras import (SparseSchedule, apply_snip, SparseWrapper, model_sparsities, prune_sparse, sparse_scope,
                              sparse_wrappers, strip_sparse, wrap_optimizer)

__version__ = "0.1.0"
