# WaveMix-256/16 (level 4) backbones that feed MMSeg decoders expecting a
# feature pyramid. Every level has embed_dims = 256 channels:
#
#   backbone              out_indices      strides        decoder in_channels
#   wavemix_pyramid       (3, 7, 11, 15)   4/8/16/32      [256, 256, 256, 256]
#   wavemix_pyramid_d8    (3, 7, 11, 15)   4/8/8/8        [256, 256, 256, 256]
#
# Multi-level heads take in_index=[0, 1, 2, 3]; single-level heads take the
# level they want (mmseg's ResNet configs use in_index=3, and 2 for the
# auxiliary head). The downsampling is the parameter-free Haar low-pass band
# (the 2x2 mean), so the parameter count is that of the backbone alone.
# Use in a decoder config as `backbone={{_base_.wavemix_pyramid}}`.
custom_imports = dict(imports=['mmseg_wavemix'], allow_failed_imports=False)
wavemix_pyramid = dict(
    _delete_=True,  # replaces the ResNet/MiT of mmseg's base model configs
    type='WaveMix',
    arch='256x16-l4',
    mlp_ratio=2,
    dropout=0.,
    stem_stride=2,
    out_indices=(3, 7, 11, 15),
    out_downsamples=(0, 1, 2, 3),
    norm_cfg=dict(type='SyncBN', requires_grad=True))
# Output stride 8, as mmseg's dilated (d8) ResNets for PSPNet / DeepLabV3+.
wavemix_pyramid_d8 = dict(wavemix_pyramid, out_downsamples=(0, 1, 1, 1))
