"""The worker contract: what the operator and the pruner agree on, and nothing else.

Both sides import this package; it imports neither of them (nor TensorFlow, kopf or
boto3). It holds the reason and exit codes (`errors`), the termination-message codec
(`termination`), the worker's command line (`worker`: flag names and the one argv
builder), the pruning settings with TAO's defaults (`settings`), and the one-line
argparse convention every command shares (`arguments`).
"""
