"""Networks, keyed by architecture id. Importing this package registers every architecture."""

# One import per architecture file: each registers itself.
from . import (
    cnn3d,  # noqa: F401, E402
    swin_unetr,  # noqa: F401, E402
    swin_unetr_msf_aa,  # noqa: F401, E402
    unet3d,  # noqa: F401, E402
    unet3d_transformer,  # noqa: F401, E402
    unet_masag,  # noqa: F401, E402
    unetr,  # noqa: F401, E402
    unetr_ag,  # noqa: F401, E402
    unetr_masag,  # noqa: F401, E402
    vertebraformer,  # noqa: F401, E402
)
from .registry import available_architectures, build_network, register_architecture  # noqa: F401
