"""Registry entries for the Glow family: ActNorm, Conv1x1, Permute, Reverse, couplings
(``Coupling`` with each transformer and each mask, and its ``AffineCoupling`` /
``AdditiveCoupling`` names).

Shapes are shared between cases (images IMG, vectors VEC, width H) so that the
primitive compilations of eager execution are reused across cases.
"""
from jaxflows.bijectors import (
    ActNorm,
    Additive,
    AdditiveCoupling,
    Affine,
    AffineCoupling,
    Chain,
    Conv1x1,
    Coupling,
    Permute,
    Repeat,
    Reverse,
)
from jaxflows.testing import BijectorCase

IMG = (2, 4, 4, 4)
VEC = (3, 6)
H = 8  # conditioner width


def _glow_step():
    return Chain([ActNorm(), Conv1x1(), AffineCoupling(hidden_channels=H)])


CASES = [
    BijectorCase("actnorm_image", ActNorm, IMG),
    BijectorCase("actnorm_vector", ActNorm, VEC),
    BijectorCase("conv1x1_lu", lambda: Conv1x1(lu=True), IMG),
    BijectorCase("conv1x1_plain", lambda: Conv1x1(lu=False), IMG),
    # Permute/Reverse have no params (perturbing is a no-op); the generic check
    # still asserts that they are not the identity.
    BijectorCase("permute", Permute, IMG),
    BijectorCase("reverse", Reverse, VEC),
    BijectorCase("affine_channel_sigmoid",
                 lambda: AffineCoupling(hidden_channels=H, mask="channel", scale_fn="sigmoid"),
                 IMG),
    # Conditional, with a [batch, K] context broadcast over the positions.
    BijectorCase("affine_channel_exp_parity1_context",
                 lambda: AffineCoupling(hidden_channels=H, mask="channel", scale_fn="exp",
                                        parity=1), IMG, context_shape=(2, 3)),
    BijectorCase("affine_checkerboard_sigmoid",
                 lambda: AffineCoupling(hidden_channels=H, mask="checkerboard",
                                        scale_fn="sigmoid"), IMG),
    BijectorCase("affine_checkerboard_exp_resnet",
                 lambda: AffineCoupling(hidden_channels=H, mask="checkerboard", scale_fn="exp",
                                        conditioner="resnet", num_blocks=1, parity=1), IMG),
    BijectorCase("affine_vector_alternating_mlp",
                 lambda: AffineCoupling(hidden_channels=H, mask="alternating"), VEC),
    BijectorCase("affine_vector_channel_residual_mlp_context",
                 lambda: AffineCoupling(hidden_channels=H, scale_fn="exp", conditioner="resnet",
                                        num_blocks=2), VEC, context_shape=(3, 2)),
    BijectorCase("additive_channel", lambda: AdditiveCoupling(hidden_channels=H), IMG),
    BijectorCase("additive_checkerboard_parity1",
                 lambda: AdditiveCoupling(hidden_channels=H, mask="checkerboard", parity=1), IMG),
    BijectorCase("additive_vector_alternating",
                 lambda: AdditiveCoupling(hidden_channels=H, mask="alternating"), VEC),
    # The generic Coupling with a transformer object (the old names are thin subclasses).
    # Unclamped exp scales amplify the round-off of (y - t) e^-s: measured 1.1e-10
    # relative to max(1, |x|) for one seed, so 1e-9 here.
    BijectorCase("coupling_affine_exp_noclamp_channel_parity1",
                 lambda: Coupling(transformer=Affine("exp", clamp=None), hidden_channels=H,
                                  parity=1), IMG, recon_atol=1e-9),
    BijectorCase("coupling_affine_sigmoid_vector_alternating_context",
                 lambda: Coupling(transformer=Affine("sigmoid"), hidden_channels=H,
                                  mask="alternating", parity=1), VEC, context_shape=(3, 2)),
    BijectorCase("coupling_additive_vector_channel",
                 lambda: Coupling(transformer=Additive(), hidden_channels=H), VEC),
    # On vectors: an image Glow under Repeat is in tests/registry/flow.py (glow models),
    # and an eager nn.scan recompiles its body at every call (costly for convolutions).
    BijectorCase("glow_step_repeat_vector", lambda: Repeat(make_step=_glow_step, num_steps=2),
                 VEC),
]
