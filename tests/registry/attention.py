"""Registry entries for AttnFlow's invertible attentions (iMap, iTrans)."""
from jaxflows.bijectors.attention import IMap, ITrans
from jaxflows.testing import BijectorCase

CASES = [
    BijectorCase("imap_parity1_c3", lambda: IMap(parity=1), (2, 4, 4, 3), perturb_scale=0.3),
    BijectorCase("itrans_heads1", lambda: ITrans(heads=1), (2, 4, 4, 2), perturb_scale=0.3),
    BijectorCase("itrans_heads2", lambda: ITrans(heads=2), (2, 4, 4, 2), perturb_scale=0.3),
    BijectorCase("itrans_heads2_k3_parity1",
                 lambda: ITrans(heads=2, kernel_size=3, qk_channels=4, parity=1),
                 (2, 4, 4, 1), perturb_scale=0.3),
    # Patches of 4 x 4 (2 x 2 tokens on an 8 x 8 image).
    BijectorCase("itrans_patch4", lambda: ITrans(heads=1, patch_size=4), (2, 8, 8, 1),
                 perturb_scale=0.3),
    # Issue 18: the supplement's tokens of half the side (a 2 x 2 grid), 3 heads on 2
    # channels (per-head projections), and the paper's free-offset matrix with the
    # checkerboard mask on the attention weights.
    BijectorCase("itrans_half_heads3", lambda: ITrans(heads=3, patch_size="half"),
                 (2, 4, 4, 2), perturb_scale=0.3),
    BijectorCase("itrans_offset_weight_mask",
                 lambda: ITrans(heads=2, matrix_form="offset", attention_mask="checkerboard",
                                parity=1), (2, 4, 4, 1), perturb_scale=0.3),
]
