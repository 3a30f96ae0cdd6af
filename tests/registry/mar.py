"""Registry entries for mAR-SCF's channel prior as bijectors (MARSplit, MARTop)."""
from jaxflows.bijectors.mar import MARSplit, MARTop
from jaxflows.testing import BijectorCase

_TINY = dict(features=3, num_layers=2, kernel_size=3, dilation=1, embed_features=3,
             embed_channels=2)

CASES = [
    # Kept and factored-out halves on a 3x3 map; 2 stacked LSTM layers. The unconditional
    # top prior is checked through the whole model in tests/test_mar_scf.py.
    BijectorCase("mar_split_dilated", lambda: MARSplit(**dict(_TINY, dilation=2)),
                 (2, 3, 3, 4)),
    BijectorCase("mar_split_context", lambda: MARSplit(**_TINY), (2, 3, 3, 2),
                 context_shape=(2, 3)),
    BijectorCase("mar_top_context", lambda: MARTop(**_TINY), (2, 2, 2, 3),
                 context_shape=(2, 2, 2, 1)),
]
