"""wrel: referring remote sensing image segmentation trained with scarce expressions.

Weakly Referring Expression Learning (WREL) trains a referring segmentation model from a few
accurate expressions plus many class-name-only ones; LRB-WREL adds a Learnable Reference Bank.
"""

__version__ = "0.1.0"
