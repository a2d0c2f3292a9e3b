"""SemiSupSeg: semi-supervised 3D medical image segmentation (package core, no Slicer/Qt imports).

Axis conventions used everywhere in the package:

* numpy arrays and torch tensors of images are in **z, y, x** order (as SimpleITK's ``GetArrayFromImage`` and
  Slicer's ``arrayFromVolume`` return them); batched tensors are ``(B, C, Z, Y, X)``.
* spacing and origin tuples follow ITK: **x, y, z**, millimetres; direction is a 3x3 LPS cosine matrix.
* sizes a user types (``--patch-size 112 112 80``) are **x, y, z**, as the papers state them.
* the LA ``mri_norm2.h5`` arrays are stored x, y, z and are transposed on reading.
"""
__version__ = "0.1.0"
