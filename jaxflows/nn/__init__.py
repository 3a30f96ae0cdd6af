"""Networks used inside bijectors (conditioners, Lipschitz layers, attention)."""
from jaxflows.nn.lipschitz import (CLIPSWISH_LIPSCHITZ, CLipSwish, LipSwish, SpectralConv,
                                   SpectralDense, update_lipschitz_state)

__all__ = ["CLIPSWISH_LIPSCHITZ", "CLipSwish", "LipSwish", "SpectralConv", "SpectralDense",
           "update_lipschitz_state"]
from jaxflows.nn.attention import L2MultiHeadAttention, LipNormAttention, lambert_w0  # noqa: E402
__all__ += ["L2MultiHeadAttention", "LipNormAttention", "lambert_w0"]
