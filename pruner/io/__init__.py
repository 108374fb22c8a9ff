"""Artifact I/O: model files, atomic writes, locations, S3, age encryption, keys, scratch.

It imports nothing of `pruner.core`, `pruner.app` or `pruner.cli`, boto3 only when a
run touches S3, and never TensorFlow or Keras: model files are read and written with
h5py and numpy. Bottom up: `formats` (the magic bytes, TAO's files) and `locations`
(parsed paths and S3 objects); then `atomic` (staged files committed by
link-or-replace), `scratch`, `keys`, `termination_log`, `age` and `s3` (one client per
run); `layerpaths` (a config's layer paths) and `h5files` (exact HDF5 copies); the
two model formats, `legacyh5` (Keras HDF5, Keras 2 and 3) and `kerasv3` (`.keras`
archives); on top `modelfile` (read a model into config + weights, write it back
edited) and `transfer` (fetch and publish artifacts).
"""
