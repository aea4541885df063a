"""EDSR: Enhanced Deep Residual Networks for Single Image Super-Resolution (Lim et al., CVPRW 2017)."""

from srfp.sisr.archs.common import ResBlock, ResidualSRNet


class EDSR(ResidualSRNet):
    """``n_resblocks`` residual blocks (``body.{i}.body.{0,2}``) in the shared residual layout.

    Keys as EDSR-PyTorch: ``sub_mean``, ``add_mean``, ``head.0``, ``body.{i}.body.{0,2}``,
    ``body.{n_resblocks}``, ``tail.0.{k}`` (upsampler convs) and ``tail.1``.
    """

    def __init__(self, scale: int, n_resblocks: int = 32, n_feats: int = 256, res_scale: float = 0.1,
                 rgb_range: float = 255, n_colors: int = 3):
        super().__init__("EDSR", scale, n_feats, [ResBlock(n_feats, 3, res_scale) for _ in range(n_resblocks)],
                         rgb_range, n_colors)
