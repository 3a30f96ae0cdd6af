"""The generic bijector registry: every module here defines ``CASES``, a list of
:class:`jaxflows.testing.BijectorCase`. ``tests/test_bijectors.py`` runs
:func:`jaxflows.testing.check_bijector` on all of them. Every bijector joins it.
"""
import importlib
import pkgutil


def all_cases():
    cases = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        mod = importlib.import_module(f"{__name__}.{info.name}")
        cases.extend(getattr(mod, "CASES", []))
    return cases
