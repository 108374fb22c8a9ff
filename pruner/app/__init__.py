"""The application: one prune run from a parsed request to a report.

`request` (the typed request) -> `preflight` (fail-fast checks) -> `artifacts` (input
fetched, output staged and published) -> `pipeline` (the steps, `run_prune`), with
`verify`, `report`, `progress` and `signals` (SIGTERM as an exception) beside them.
It may import `pruner.core` and `pruner.io`, never `pruner.cli`.
"""
