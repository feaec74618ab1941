"""rmsin: the RMSIN network of the LRB-WREL paper (multimodal Swin-B with pixel-word
attention, intra- and cross-scale interaction, ARC decoder), selected with ``model.arch: rmsin``.

Parts: :mod:`.config` (``RmsinConfig``), :mod:`.swin` (blocks and stages), :mod:`.fusion`
(PWAM, IIM, gates), :mod:`.cross_scale` (CIM), :mod:`.decoder` (ARC decoder), :mod:`.network`
(the segmenter), :mod:`.model` (the ``RefSegModel`` interface, ``build_rmsin``) and
:mod:`.released` (key map, released checkpoints, Swin weights). This package imports only its
config eagerly, so :mod:`wrel.models.config` can own ``RmsinConfig`` without an import cycle.
See docs/model.md ("The paper's network: rmsin").
"""

from wrel.models.rmsin.config import RmsinConfig

__all__ = ["RmsinConfig"]
