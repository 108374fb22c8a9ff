"""The pruner: TAO tlt-prune semantics for Keras models, in four one-way layers.

`core` (channel graph, layer kinds, statistics, plan, surgery: numpy and Keras only)
and `io` (model files, atomic writes, locations, S3, age, keys, scratch space) know
nothing of each other; `app` (one prune run: request, checks, pipeline, report) uses
both; `cli` (`prunejob prune` / `tlt-prune`, `prunejob encrypt|decrypt`) uses all
three. Every layer may import `prunejob_contract`; none imports the operator.
"""
