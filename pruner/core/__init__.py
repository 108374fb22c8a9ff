"""The pruning core: a model's config and weights in, a plan, a pruned config and weights out.

Pure numpy over plain values: `config` is the model's config as its file stores it
(either dialect: Keras 3, or Keras 2 as tf_keras and TAO write it), `weights` is
`{layer path: [arrays in Keras order]}`. No files, no S3, no encryption, no argument
parsing, and no Keras on the main path: `build.build_model` (for `--verify`) is the
only module that imports Keras, lazily. It imports nothing of `pruner.io`,
`pruner.app` or `pruner.cli`. Layers, bottom up: `modelconfig`, `shapes` -> `graph`
(the channel graph and the `LayerKind` interface) -> `kinds/` -> `walk` ->
`counting` -> `plan` -> `dialect` -> `surgery`, `masking`, `target`, `build`;
`stats` is numpy only.

API: `plan.prepare(config, weights, settings)` -> `PreparedModel` (`.plan(threshold)`,
`.totals(plan)`, `.group_stats`, `.pinned`, `.unknown_excluded`, `.layer_names()`);
`surgery.apply_plan(config, weights, plan)` -> `(config, weights)`;
`masking.mask_removed_filters(config, weights, plan)` -> `weights`;
`counting.count_params(weights)`, `counting.count_flops(config, weights)`;
`dialect.keras3_config(config)`; `build.build_model(config, weights)` -> a Keras model.
"""
