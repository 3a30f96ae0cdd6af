"""One generic test that every bijector in the registry (tests/registry/) passes."""
import pytest

from jaxflows import testing
from tests.registry import all_cases

CASES = all_cases()


def test_registry_is_not_empty():
    assert len(CASES) > 0


def test_registry_names_are_unique():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), names


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bijector(case):
    testing.check_bijector(case)
