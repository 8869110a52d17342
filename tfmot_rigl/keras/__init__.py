"""The Keras / TFMOT layer: wrappers, schedules, the one-call API and the optimizer integration."""
from tfmot_rigl.keras.optimizer import wrap_optimizer
from tfmot_rigl.keras.pretrained import PretrainedError, load_pretrained
from tfmot_rigl.keras.prune import (SparsifiableDepthwiseConv2D, model_sparsities, prune_sparse, sparse_scope,
                                    sparse_wrappers, sparsifiable_shapes, strip_sparse)
from tfmot_rigl.keras.saving import load_model
from tfmot_rigl.keras.schedule import SparseSchedule
from tfmot_rigl.keras.snip import apply_snip
from tfmot_rigl.keras.wrapper import SparseWrapper
