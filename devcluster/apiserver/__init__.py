"""The local API server: HTTP dispatch, the object store and its watches, lifecycle, discovery."""
