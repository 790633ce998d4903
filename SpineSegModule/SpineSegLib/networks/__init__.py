"""Networks, keyed by architecture id. Importing this package registers every architecture."""

from .registry import available_architectures, build_network, register_architecture  # noqa: F401

# One import per architecture file: each registers itself.
from . import unet3d  # noqa: F401, E402
from . import cnn3d  # noqa: F401, E402
from . import unet3d_transformer  # noqa: F401, E402
from . import swin_unetr  # noqa: F401, E402
from . import swin_unetr_msf_aa  # noqa: F401, E402
from . import unetr  # noqa: F401, E402
from . import unetr_ag  # noqa: F401, E402
from . import unetr_masag  # noqa: F401, E402
from . import unet_masag  # noqa: F401, E402
from . import vertebraformer  # noqa: F401, E402
