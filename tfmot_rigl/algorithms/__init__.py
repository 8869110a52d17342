"""Sparse-training algorithms: each a small class over `SparseAlgorithm`; grow/drop scores are what differ."""
from tfmot_rigl.algorithms.base import (LayerUpdate, SparseAlgorithm, algorithm_names, as_algorithm, deserialize,
                                       make_algorithm, serialize)
from tfmot_rigl.algorithms.magnitude import Magnitude
from tfmot_rigl.algorithms.rigl import RigL
from tfmot_rigl.algorithms.set import SET
from tfmot_rigl.algorithms.snfs import SNFS
from tfmot_rigl.algorithms.snip import SNIP
from tfmot_rigl.algorithms.static import Dense, Static
