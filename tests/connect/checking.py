"""The checks the Spark Connect scripts share: each raises AssertionError naming what did
not hold."""
from pyspark.errors import AnalysisException


def check(what, got, want):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


def fails(what, error_class, f):
    """`f()` raises an AnalysisException of `error_class`."""
    try:
        f()
    except AnalysisException as e:
        check(f"{what}: error class", e.getCondition(), error_class)
        return
    raise AssertionError(f"{what}: no AnalysisException")
