"""gan-features: DCGAN discriminators as image representations, and how good they are.

The stages, each usable on its own (see README.md):
images (``data``) -> networks (``models``, ``checkpoints``, ``train``) -> pooled activations
(``features``) -> HDF5 (``store``) -> L2-SVM (``svm``) -> evaluation protocols (``protocols``)
-> tables (``report``).
"""
__version__ = "0.1.0"
