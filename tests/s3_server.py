"""The tests' S3 endpoint: moto in server mode, re-exported from devcluster.stack.

A real S3 endpoint for tests: moto in server mode on 127.0.0.1, spoken to over HTTP
exactly as boto3 would speak to AWS or MinIO. Shared by the storage and operator tests;
started by devcluster's stack module, as the demo and the benches start it."""

from devcluster.stack import free_port, moto_server

__all__ = ["free_port", "moto_server"]
