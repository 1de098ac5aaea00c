# Copyright (c) mmseg_wavemix contributors. All rights reserved.
"""Registration in the other OpenMMLab toolboxes this package serves.

Modules register in mmseg's registries with their decorators; the backbone is
also registered in mmpretrain's, so that classification configs
(``default_scope='mmpretrain'``) use the same class. The hooks live in
mmengine's root registry, which every toolbox falls back to.
"""


def register_for_mmpretrain(module: type) -> type:
    """Register ``module`` in mmpretrain's MODELS if mmpretrain is installed
    (``pip install mmseg_wavemix[cls]``)."""
    try:
        from mmpretrain.registry import MODELS
    except ImportError:
        return module
    MODELS.register_module(module=module)
    return module
