"""Model Garden integration. Importing it registers the `wide_resnet` and `mlp` backbones with the backbone factory."""
from tfmot_rigl.modelgarden import backbones
from tfmot_rigl.modelgarden.backbones import MLP, SparseBackbone, WideResNet
