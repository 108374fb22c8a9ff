"""Layer kinds: one small class per family of Keras layers, and the registry of them.

`common` holds what the families share; `producers`, `passthrough`, `normalization`,
`merges`, `reshapes`, `opaque`, `wrappers` (TimeDistributed) and `tfops` (tf_keras'
TFOpLambda) are the families; `registry` maps Keras class names to kinds
(`kind_for`). Every kind implements `pruner.core.graph.LayerKind`.
"""
