"""Phantom settings, the regions a field of view can cover, and the tissue codes painted before HU mapping."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ..errors import InputError

# region -> (first, last) vertebra fully inside the field of view. The field of view reaches a random 30-70 % into
# the neighbouring level at each end (so e.g. "cervical" shows C1-C7 fully and part of T1), except below the sacrum,
# where it ends 10-30 mm under the sacral tip. With the T13 variant "thoracic" ends at T13 instead of T12; with the
# L6 variant "lumbar", "thoracolumbar" and "whole" include L6 (they end at the sacrum).
# The phantom a seed gives is part of the training-data contract: datasets record this version and the trainer
# refuses phantoms made by another one (a network trained on old anatomy is evaluated on new). Bump it with every
# change to what a seed draws; Testing/core/test_phantom.py pins one phantom's labels to it.
GENERATOR_VERSION = 2

REGIONS: dict[str, tuple[str, str]] = {
    "whole": ("C1", "sacrum"),
    "cervical": ("C1", "C7"),
    "thoracic": ("T1", "T12"),
    "lumbar": ("L1", "sacrum"),
    "thoracolumbar": ("T10", "sacrum"),
}
ORIENTATIONS = ("RAS", "LPS", "oblique")
VARIANTS = ("none", "T13", "L6", "random")
LESION_CLASSES = ("fracture", "lytic", "sclerotic")


@dataclass
class PhantomConfig:
    seed: int = 0
    region: str = "whole"  # whole | cervical | thoracic | lumbar | thoracolumbar
    shape: tuple[int, int, int] | None = None  # voxels (i, j, k); None: the region plus margins, body width inside
    spacing: tuple[float, float, float] = (1.25, 1.25, 1.25)  # mm
    orientation: str = "RAS"  # RAS | LPS | oblique: how the array is stored; the affine is always voxel -> RAS
    lesions: int = 2  # number of lesions (0 allowed), classes drawn among fracture / lytic / sclerotic
    variant: str = "none"  # none | T13 | L6 | random (~15 % T13, ~15 % L6)
    scoliosis: bool | None = None  # None: random (~30 %)
    metal: bool = False  # pedicle screws with streak artefacts
    noise_hu: float | None = None  # None: random in 10-40 HU

    def validate(self) -> PhantomConfig:
        if self.region not in REGIONS:
            raise InputError(f"unknown phantom region {self.region!r}; choose one of {', '.join(REGIONS)}")
        if self.orientation not in ORIENTATIONS:
            raise InputError(f"unknown orientation {self.orientation!r}; choose one of {', '.join(ORIENTATIONS)}")
        if self.variant not in VARIANTS:
            raise InputError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if self.shape is not None:
            if len(self.shape) != 3 or min(int(s) for s in self.shape) < 8:
                raise InputError(f"phantom shape must be three sizes of at least 8 voxels, got {self.shape}")
            self.shape = tuple(int(s) for s in self.shape)
        if len(self.spacing) != 3 or min(float(s) for s in self.spacing) <= 0:
            raise InputError(f"phantom spacing must be three positive sizes in mm, got {self.spacing}")
        self.spacing = tuple(float(s) for s in self.spacing)
        if int(self.lesions) < 0:
            raise InputError(f"number of lesions must be 0 or more, got {self.lesions}")
        if self.noise_hu is not None and float(self.noise_hu) < 0:
            raise InputError(f"noise_hu must be 0 or more, got {self.noise_hu}")
        return self

    def to_dict(self) -> dict:
        document = asdict(self)
        document["shape"] = list(self.shape) if self.shape is not None else None
        document["spacing"] = list(self.spacing)
        return document


class Tissue:
    """Tissue codes of the intermediate tissue map; :mod:`.acquisition` turns them into Hounsfield units."""

    AIR = 0
    TABLE_SHELL = 1
    TABLE_FOAM = 2
    SKIN = 3
    FAT = 4
    MUSCLE = 5
    ORGAN = 6
    LUNG = 7
    CSF = 8
    DISC = 9
    NUCLEUS = 10
    CORTICAL = 11
    CANCELLOUS = 12
    LYTIC = 13
    SCLEROTIC = 14
    METAL = 15
    BLOOD = 16
    LIVER = 17
    GAS = 18
    CARTILAGE = 19
    COUNT = 20

    BONE = (CORTICAL, CANCELLOUS, LYTIC, SCLEROTIC)
