"""Synthetic spine CT phantoms with exact vertebra labels and a lesion list, for training and testing.

``generate_phantom(PhantomConfig(...))`` returns a :class:`Phantom` (int16 CT in HU and uint8 label map on one
grid, lesion list); ``write_phantom`` writes ct.nii.gz, vertebrae.nii.gz, lesions.json and preview.png.
Modules: ``config`` (settings, regions, tissue codes), ``spine`` (curve, levels, sizes), ``vertebra`` (vertebra,
sacrum, disc shapes), ``bones`` (ribs, sternum, pelvis), ``body`` (soft tissue, lungs, table), ``lesions``
(fractures, metastases, screws), ``acquisition`` (HU, texture, streaks, blur, noise), ``raster`` (grid and shape
primitives), ``generator`` (orchestration and writing).
"""

from .config import GENERATOR_VERSION, REGIONS, PhantomConfig
from .generator import Phantom, generate_phantom, write_phantom

__all__ = ["GENERATOR_VERSION", "REGIONS", "Phantom", "PhantomConfig", "generate_phantom", "write_phantom"]
