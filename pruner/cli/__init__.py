"""The command lines: `prunejob prune` / `tlt-prune` and `prunejob encrypt|decrypt`.

Modules `prune` and `crypto`. Argument parsing and presentation only; the work is `pruner.app`
(pruning) and `pruner.io` (files, S3, age)."""
