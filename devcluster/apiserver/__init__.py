"""The devcluster's local Kubernetes API server, emulated over aiohttp.

The local API server: HTTP dispatch, the object store and its watches, lifecycle,
discovery, and the pure helpers beside them (``devcluster.apiserver.server`` serves it)."""
