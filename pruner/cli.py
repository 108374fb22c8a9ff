"""Entry point placeholder."""


def tlt_prune_main() -> int:
    return 0
