"""The SISR architectures, built by name: the study's (EDSR, RDN, RCAN) and published ones (ESRGAN, SRFBN,
DRN, SAN, SPSR).

Each model's state_dict keys and shapes are those of its official release (EDSR-PyTorch; xinntao/ESRGAN;
Paper99/SRFBN_CVPR19; guoyongcs/DRN; daitao/SAN; Maclory/SPSR), so published checkpoints load with
``load_state_dict(..., strict=True)``. Models map N x 3 x h x w images in [0, rgb_range] (ESRGAN, SPSR: [0, 1])
to N x 3 x (h * scale) x (w * scale).
"""

import inspect

from torch import nn

from srfp.sisr.archs.drn import DRN
from srfp.sisr.archs.edsr import EDSR
from srfp.sisr.archs.esrgan import RRDBNet
from srfp.sisr.archs.rcan import RCAN
from srfp.sisr.archs.rdn import RDN
from srfp.sisr.archs.san import SAN
from srfp.sisr.archs.spsr import SPSRNet
from srfp.sisr.archs.srfbn import SRFBN

#: Architecture name -> class; each constructor takes ``scale`` then keyword options.
ARCHITECTURES: dict[str, type[nn.Module]] = {"EDSR": EDSR, "RDN": RDN, "RCAN": RCAN, "ESRGAN": RRDBNet,
                                              "SRFBN": SRFBN, "DRN": DRN,
                                              "SAN": SAN, "SPSR": SPSRNet}
SCALES = (2, 3, 4)

#: The configurations of the published models (also the constructors' defaults).
PUBLISHED: dict[str, dict] = {
    "EDSR": {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1},
    "RDN": {"G0": 64, "D": 16, "C": 8, "G": 64},
    "RCAN": {"n_resgroups": 10, "n_resblocks": 20, "n_feats": 64, "reduction": 16},
    "ESRGAN": {"nf": 64, "nb": 23, "gc": 32},
    "SRFBN": {"num_features": 64, "num_steps": 4, "num_groups": 6},
    "DRN": {"n_blocks": 30, "n_feats": 16},
    "SAN": {"n_resgroups": 20, "n_resblocks": 10, "n_feats": 64, "reduction": 16},
    "SPSR": {"nf": 64, "nb": 23, "gc": 32},
}

#: Tiny configurations of the same layouts, for tests.
TINY: dict[str, dict] = {
    "EDSR": {"n_resblocks": 2, "n_feats": 16},
    "RDN": {"G0": 16, "D": 2, "C": 2, "G": 8},
    "RCAN": {"n_resgroups": 2, "n_resblocks": 2, "n_feats": 16, "reduction": 4},
    "ESRGAN": {"nf": 8, "nb": 1, "gc": 4},
    "SRFBN": {"num_features": 8, "num_steps": 2, "num_groups": 2},
    "DRN": {"n_blocks": 1, "n_feats": 8},
    "SAN": {"n_resgroups": 2, "n_resblocks": 1, "n_feats": 8, "reduction": 4},
    "SPSR": {"nf": 4, "nb": 20, "gc": 2},
}


def create_model(arch: str, scale: int, **options) -> nn.Module:
    """A freshly initialised ``arch`` model for ``scale``, built with the constructor options given.

    Raises ValueError for an unknown arch, a scale outside 2, 3, 4, an option the constructor does
    not take, or an option value that is not a positive number of the annotated type.
    """
    check_options(arch, options)
    if scale not in SCALES:
        raise ValueError(f"{arch}: scale {scale!r} is not allowed; allowed values: {', '.join(map(str, SCALES))}")
    return ARCHITECTURES[arch](int(scale), **options)


def check_options(arch: str, options: dict) -> None:
    """A known arch, and every option names a constructor parameter (not scale) with a positive number."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; allowed values: {', '.join(ARCHITECTURES)}")
    parameters = inspect.signature(ARCHITECTURES[arch]).parameters
    allowed = [name for name in parameters if name != "scale"]
    for name, value in options.items():
        if name not in allowed:
            raise ValueError(f"{arch}: unknown option {name!r}; allowed options: {', '.join(allowed)}")
        expected = parameters[name].annotation
        types = (int, float) if expected is float else (expected,)
        if isinstance(value, bool) or not isinstance(value, types) or value <= 0:
            raise ValueError(f"{arch}: option {name}={value!r} is invalid; expected a positive {expected.__name__}")
