"""Today's (pre-issue-10) pruning core on live Keras objects, kept only as an oracle.

A frozen copy of `pruner.core` as of main 9ebc826 (walk `model.get_config()` and
`model.operations`, rebuild with `Model.from_config`), used by the tests that compare
its plans with the new config + weights path. Not a product path; removed once the
comparison is done.
"""
