"""SpineSeg core: host-agnostic spine CT segmentation (no Qt).

Hosts (the Slicer module, the command line, the web front end) and the trainer are thin shells over these
modules. Array convention everywhere in the core: numpy arrays indexed (i, j, k) as stored in NIfTI, with a
4x4 affine mapping voxel indices to RAS millimetres.
"""

__version__ = "0.1.0"
