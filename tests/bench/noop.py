"""The stock RQ benchmark's job: a module that imports nothing, so a forked work horse pays no
import cost that a real no-op job would not."""


def noop() -> None:
    """Does nothing."""
