"""The command lines: `prunejob prune` / `tlt-prune` (`prune`) and `prunejob encrypt` /
`prunejob decrypt` (`crypto`). Argument parsing and presentation only; the work is
`pruner.app` (pruning) and `pruner.io` (files, S3, age)."""
