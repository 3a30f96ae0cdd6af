"""One generic test that every bijector in the registry (tests/registry/) passes, and tests
of that test: :func:`jaxflows.testing.check_bijector` must fail on each bug it guards
against (a float32 computation inside a float64 call, a wrong log-det sign, a wrong
gradient, examples that interact, a wrong training-mode log-det, a bijector that does
not move its input).
"""
import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from jaxflows import testing
from jaxflows.bijectors.base import Bijector
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


# ------------------------------------------------------------------ tests of the test
class _Toy(Bijector):
    """Elementwise ``y = x * exp(s) + b`` with one deliberate ``bug`` (or none)."""

    bug: str = "none"

    @nn.compact
    def transform(self, x, inverse, context, train):
        s = self.param("log_scale", nn.initializers.zeros, x.shape[1:]).astype(x.dtype)
        b = self.param("shift", nn.initializers.zeros, x.shape[1:]).astype(x.dtype)
        if self.bug == "no_effect":  # parameters exist but never reach the output
            return x, jnp.zeros(x.shape[:1], x.dtype)
        if self.bug == "unused":  # one parameter never reaches the output
            self.param("unused", nn.initializers.zeros, (2,))
        if self.bug == "one_element":  # only the first coordinate moves
            s = s.at[1:].set(0.0)
            b = b.at[1:].set(0.0)
        ld = jnp.broadcast_to(jnp.sum(s), x.shape[:1])
        if self.bug == "sign":
            ld = -ld
        if self.bug == "train_log_det" and train:
            ld = 0.5 * ld
        if self.bug == "stop_gradient":
            ld = jax.lax.stop_gradient(ld)
        if inverse and self.bug == "batch_coupled":
            rows = []
            for i in range(x.shape[0]):  # undoes the lower-triangular batch coupling
                prev = 0.1 * rows[-1] if rows else 0.0
                rows.append((x[i] - b - prev) * jnp.exp(-s))
            return jnp.stack(rows), -ld
        if inverse:
            return (x - b) * jnp.exp(-s), -ld
        if self.bug == "float32":  # the scale applied in float32, whatever the input dtype
            y = (x.astype(jnp.float32) * jnp.exp(s).astype(jnp.float32)).astype(x.dtype) + b
        elif self.bug == "batch_coupled":
            # Example i also depends on example i - 1: invertible, per-example log-det
            # still sum(s) (block-triangular Jacobian), but examples interact.
            prev = jnp.concatenate([jnp.zeros_like(x[:1]), x[:-1]], axis=0)
            y = x * jnp.exp(s) + b + 0.1 * prev
        else:
            y = x * jnp.exp(s) + b
        return y, ld


def _toy_case(bug, **kw):
    return testing.BijectorCase(f"toy_{bug}", lambda: _Toy(bug=bug), (3, 8), **kw)


def test_check_passes_the_correct_toy():
    out = testing.check_bijector(_toy_case("none"))
    assert out["log_det_error[train=False]"] < 1e-12
    assert out["reconstruction[train=True]"] < 1e-12
    assert out["moved_fraction"] == 1.0
    # train=True changes nothing in the toy: check 5 is the evaluation program itself.
    assert out["train_program"] == "same as eval"


def test_training_mode_is_compiled_and_checked_where_it_differs():
    # A program that differs is compiled and checked (the wrong training log-det of the
    # toy is caught: test_check_catches); a dead rng split, as the unused "dropout" and
    # "logdet" streams of training mode, does not make programs differ. A real dropout
    # bijector's training mode is checked.
    assert testing.same_program(_CHECK_PROGRAM, (jnp.ones(3),), "eval", "eval")
    assert not testing.same_program(_CHECK_PROGRAM, (jnp.ones(3),), "eval", "train")
    assert testing.same_program(_CHECK_PROGRAM, (jnp.ones(3),), "eval", "unused_rng")
    dropout = next(c for c in CASES if c.name == "maf_affine_random_order_context_dropout")
    assert testing.check_bijector(dropout, seed=0)["train_program"] == "checked"


def _program(x, mode):
    if mode == "train":
        return 2.0 * x
    if mode == "unused_rng":  # a dead key split is eliminated: the same program
        jax.random.split(jax.random.PRNGKey(0), 3)
    return x + 0.0


_CHECK_PROGRAM = jax.jit(_program, static_argnums=1)


@pytest.mark.parametrize("bug, message", [
    ("float32", "differs from x by"),            # a float32 leak in a float64 check
    ("sign", "slogdet"),                        # wrong log-det sign
    ("stop_gradient", "directional derivative"),  # reverse mode disagrees with FD
    ("batch_coupled", "examples interact"),       # cross-example dependence
    ("train_log_det", r"train=True"),             # wrong only in training mode
    ("one_element", "elements moved"),            # nearly the identity
])
def test_check_catches(bug, message):
    with pytest.raises(AssertionError, match=message):
        testing.check_bijector(_toy_case(bug), seed=0)


def test_check_catches_parameters_without_effect():
    # Parameters that never reach the output: the identity guard (for every bijector,
    # with or without parameters), and the per-leaf gradient check for a single leaf.
    with pytest.raises(AssertionError, match="elements moved"):
        testing.check_bijector(_toy_case("no_effect"), seed=0)
    with pytest.raises(AssertionError, match="zero gradient for parameter .*unused"):
        testing.check_bijector(_toy_case("unused"), seed=0)


def test_float32_leak_passes_the_old_tolerance_but_not_the_new():
    """The leak is ~1e-7: invisible at the former ``1e-6 * max|x|`` tolerance."""
    out = testing.check_bijector(_toy_case("float32", recon_atol=1e-6, atol=1e-6, rtol=1e-6,
                                           grad_rtol=1e-2, check_grads=False), seed=0)
    assert 1e-10 < out["reconstruction[train=False]"] < 1e-6


def test_case_arguments_are_checked():
    with pytest.raises(ValueError, match="train_log_det"):
        testing.BijectorCase("x", _Toy, (2, 3), train_log_det="sometimes")
    with pytest.raises(ValueError, match="min_moved_fraction"):
        testing.BijectorCase("x", _Toy, (2, 3), min_moved_fraction=2.0)
