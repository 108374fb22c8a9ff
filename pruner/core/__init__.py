"""The pruning core: channel graph, layer kinds, statistics, plan, surgery, counting.

Pure numpy over Keras objects and configs: no files, no S3, no encryption, no
argument parsing. It imports nothing of `pruner.io`, `pruner.app` or `pruner.cli`,
and TensorFlow only on first use. Layers, bottom up: `modelconfig` -> `graph` (the
channel graph and the `LayerKind` interface) -> `kinds/` -> `walk` -> `counting`
-> `plan` -> `surgery`, `masking`, `target`; `stats` is numpy only.
"""
