"""srfp: fingerprints of super-resolution networks, at cluster scale.

Train a grid of SISR models, super-resolve photos with each, and train classifiers that attribute an
image to its model or parse the model's hyperparameters. See README.md and ``python -m srfp.grid --help``.
"""

__version__ = "0.1.0"
