"""The Keras 3 layer: sparse training of `import keras` models on the TensorFlow and JAX backends.

The same API as the tf_keras one (tfmot_rigl.prune_sparse, ...), for Keras 3 models::

    import keras
    from tfmot_rigl import keras3 as sparse
    model = sparse.prune_sparse(model, sparse.RigL(), sparsity=0.9)
    model.compile(sparse.wrap_optimizer(keras.optimizers.SGD(0.1), model), loss=...)

Algorithms and distributions are tfmot_rigl's own (tfmot_rigl.algorithms, tfmot_rigl.core); the in-step mask math is
tfmot_rigl.keras3.mask_ops, written once in `keras.ops` for every backend.
"""
import keras as _keras

if int(_keras.__version__.split(".")[0]) < 3:
  raise ImportError(f"tfmot_rigl.keras3 needs Keras 3 (`import keras` gave Keras {_keras.__version__}); for tf_keras "
                    "models use tfmot_rigl's own API (tfmot_rigl.prune_sparse).")

from tfmot_rigl.algorithms import SET, SNFS, SNIP, Dense, Magnitude, RigL, Static, make_algorithm  # noqa: E402
from tfmot_rigl.core.distributions import layer_sparsities  # noqa: E402
from tfmot_rigl.keras3.callbacks import SparsitySummaries, sparsities  # noqa: E402
from tfmot_rigl.keras3.optimizer import wrap_optimizer  # noqa: E402
from tfmot_rigl.keras3.prune import (layer_masks, model_sparsities, prune_sparse, resolve_window,  # noqa: E402
                                     sparse_wrappers, strip_sparse)
from tfmot_rigl.keras3.saving import load_model  # noqa: E402
from tfmot_rigl.keras3.wrapper import SparseWrapper  # noqa: E402
