"""Networks used inside bijectors (conditioners, Lipschitz layers, attention)."""
from jaxflows.nn.lipschitz import (CLIPSWISH_LIPSCHITZ, CLipSwish, LipSwish, SpectralConv,
                                   SpectralDense, update_lipschitz_state)

__all__ = ["CLIPSWISH_LIPSCHITZ", "CLipSwish", "LipSwish", "SpectralConv", "SpectralDense",
           "update_lipschitz_state"]
