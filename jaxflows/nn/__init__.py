"""Networks used inside bijectors: conditioners, Lipschitz layers, Lipschitz attention,
and the convolution kernels they compute with.
"""
from jaxflows.nn.attention import L2MultiHeadAttention, LipNormAttention, lambert_w0
from jaxflows.nn.conditioners import (
                                      Conv2D,
                                      GlowConditioner,
                                      MLPConditioner,
                                      ResNetConditioner,
                                      ZeroConv2D,
)
from jaxflows.nn.conv import conv2d_same, conv_impl
from jaxflows.nn.convlstm import ConvLSTM, ConvLSTMCell
from jaxflows.nn.encoders import RRDB, ClassEmbedding, RRDBEncoder, SegmentationEncoder
from jaxflows.nn.flowpp import FlowppConditioner, GatedAttention, GatedConv, concat_elu
from jaxflows.nn.lipschitz import (
                                      CLIPSWISH_LIPSCHITZ,
                                      CLipSwish,
                                      LipSwish,
                                      SpectralConv,
                                      SpectralDense,
                                      update_lipschitz_state,
)
from jaxflows.nn.made import MADE, made_degrees, made_masks
from jaxflows.nn.vit import ViT, patchify, unpatchify

__all__ = [
    "CLIPSWISH_LIPSCHITZ", "CLipSwish", "LipSwish", "SpectralConv", "SpectralDense",
    "update_lipschitz_state",
    "Conv2D", "ZeroConv2D", "GlowConditioner", "ResNetConditioner", "MLPConditioner",
    "conv2d_same", "conv_impl", "ConvLSTM", "ConvLSTMCell",
    "L2MultiHeadAttention", "LipNormAttention", "lambert_w0",
    "MADE", "made_degrees", "made_masks",
    "FlowppConditioner", "GatedConv", "GatedAttention", "concat_elu",
    "RRDB", "RRDBEncoder", "SegmentationEncoder", "ClassEmbedding",
    "ViT", "patchify", "unpatchify",
]
