"""Registry entries for transformer flows: TarFlow blocks (the sequential inverse and
Gauss-Seidel-Jacobi, class weights / vector contexts) and the scanned TarFlow stack (plain
Jacobi, both token orders, label dropout), a Jet coupling (spatial split, image context by
cross-attention) and the scanned Jet stack (channel and spatial splits, remat), and
TarFlow's noise augmentation.

Images ``[2, 4, 4, 2]``: with patch 2 that is 4 tokens of 8 features.
"""
from jaxflows.bijectors import (
    JetStack,
    TarFlowStack,
    TransformerAutoregressive,
    TransformerCoupling,
)
from jaxflows.models.transformer_flows import GaussianNoiseAugment
from jaxflows.testing import BijectorCase

IMG = (2, 4, 4, 2)
VIT = dict(width=8, depth=1, heads=2, mlp_ratio=1.0)

CASES = [
    # Class weights [B, K] (the check draws float contexts): the soft-label path of the
    # class embedding, which classifier-free guidance uses for the null condition.
    BijectorCase("tarflow_block_scan_class", lambda: TransformerAutoregressive(
        patch_size=2, num_classes=3, **VIT), IMG, context_shape=(2, 3), perturb_scale=0.3),
    BijectorCase("tarflow_block_gs_jacobi_vector_context", lambda: TransformerAutoregressive(
        patch_size=2, inverse_method="jacobi", chunk_size=2, **VIT), IMG,
        context_shape=(2, 3), perturb_scale=0.3),
    BijectorCase("jet_coupling_checkerboard_cross_attention", lambda: TransformerCoupling(
        kind="checkerboard-inv", patch_size=2, cross_attention=True, **VIT), IMG,
        context_shape=(2, 2, 2, 3), perturb_scale=0.3),
    # Channel (seeded permutations) and spatial couplings, scanned and rematerialised.
    BijectorCase("jet_stack_scan_remat", lambda: JetStack(
        num_layers=3, patch_size=2, kinds=("channel", "spatial"),
        spatial_kinds=("vstripes", "hstripes-inv"), remat=True, width=8, depth=1, heads=2,
        mlp_ratio=1.0), IMG, perturb_scale=0.3),
    # Plain Jacobi through a scanned pair (identity, flip) and an odd last block; class
    # labels dropped at train=True (rng "dropout", the same key forward and inverse).
    BijectorCase("tarflow_stack_jacobi_label_drop", lambda: TarFlowStack(
        blocks=3, patch_size=2, width=8, depth=1, heads=2, mlp_ratio=1.0, num_classes=3,
        label_drop=0.5, inverse_method="jacobi"), IMG, context_shape=(2, 3),
        perturb_scale=0.3),
    # TarFlow's noise augmentation: the identity in evaluation (train=True adds noise, a
    # data augmentation, not a bijection: no train-mode check).
    BijectorCase("tarflow_noise_augment_eval", lambda: GaussianNoiseAugment(0.05), IMG,
                 identity=True, train_log_det=None, check_grads=False),
]
