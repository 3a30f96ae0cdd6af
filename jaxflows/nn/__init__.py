"""Networks used inside bijectors (conditioners, Lipschitz layers, attention)."""
from jaxflows.nn.lipschitz import (CLIPSWISH_LIPSCHITZ, CLipSwish, LipSwish, SpectralConv,
                                   SpectralDense, update_lipschitz_state)
from jaxflows.nn.conditioners import (Conv2D, GlowConditioner, MLPConditioner, ResNetConditioner,
                                      ZeroConv2D, conv2d)

__all__ = ["CLIPSWISH_LIPSCHITZ", "CLipSwish", "LipSwish", "SpectralConv", "SpectralDense",
           "update_lipschitz_state"]
__all__ += ["Conv2D", "ZeroConv2D", "conv2d", "GlowConditioner", "ResNetConditioner",
            "MLPConditioner"]
from jaxflows.nn.attention import L2MultiHeadAttention, LipNormAttention, lambert_w0  # noqa: E402
__all__ += ["L2MultiHeadAttention", "LipNormAttention", "lambert_w0"]
