"""Loss building blocks, one file per family; import from the submodule (``semisupseg.losses.segmentation``...).

* ``segmentation``: soft Dice, cross-entropy on class probabilities/logits (supervised terms of every method).
* ``consistency``: mean-teacher MSE, uncertainty-masked consistency, entropy minimisation, dual-task (DTC).
* ``shape``: SDM regression, product loss, boundary-ring loss (SASSNet, SB-Net).
* ``adversarial``: generator/discriminator terms.
* ``regional``: SGRS-Net region-restricted losses.
"""
