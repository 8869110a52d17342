"""Input data for the experiments: real datasets that work offline."""
from tfmot_rigl.data.mnist import load_bundled_mnist
from tfmot_rigl.data.mnist import mnist_dataset
from tfmot_rigl.data.mnist import mnist_source

__all__ = ["load_bundled_mnist", "mnist_dataset", "mnist_source"]
