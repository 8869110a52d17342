"""Model Garden integration. Importing it registers the `wide_resnet` and `mlp` backbones, the sparse experiments and
the sparse image-classification task with Model Garden's factories."""
from tfmot_rigl.modelgarden import backbones
from tfmot_rigl.modelgarden.backbones import MLP, SparseBackbone, WideResNet
# The sparse experiments (`resnet_rigl`, `mobilenet_rigl`, `wrn_cifar10_rigl`, `mnist_rigl`) and the task that trains
# them, registered with Model Garden's exp_factory and task_factory on import.
from tfmot_rigl.modelgarden import configs
from tfmot_rigl.modelgarden import task
from tfmot_rigl.modelgarden.configs import EXPERIMENTS, SparseExperimentConfig, SparsityConfig
from tfmot_rigl.modelgarden.task import SparseImageClassificationTask
