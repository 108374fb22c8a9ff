"""Artifact I/O: model files, atomic writes, locations, S3, age encryption, keys, scratch.

It imports nothing of `pruner.core`, `pruner.app` or `pruner.cli`, boto3 only when a
run touches S3 and TensorFlow only when a model is loaded or saved. Bottom up:
`formats` (the magic bytes) and `locations` (parsed paths and S3 objects); then
`atomic` (staged files committed by link-or-replace), `scratch`, `keys`,
`termination_log`, `age` and `s3` (one client per run); on top `modelfile` (Keras
load/save) and `transfer` (fetch and publish artifacts).
"""
