"""Qt-free scene logic of the SemiSupSeg Slicer extension, shared by the ``SemiSupSeg`` and ``SemiSupSegTraining``
modules.

Everything here imports ``slicer``/``vtk``/``numpy``/``semisupseg`` but never ``qt``/``ctk``, and takes the MRML scene
and the module logics it needs as arguments (never ``slicer.app`` / ``slicer.modules``), so that it runs and is
tested on the Qt-free ``slicer-core`` build as well as inside the Slicer application.
"""
