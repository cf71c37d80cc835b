"""A ``kind: python`` objective factory that raises an arbitrary exception type."""


def make(**options):
    raise ZeroDivisionError("raising_factory: division by zero while building")
