from mmsam.heads.aux_head import MultiScaleAuxHead
from mmsam.heads.sam_decoder import SamDecoderHead, upsample_logits

__all__ = ["MultiScaleAuxHead", "SamDecoderHead", "upsample_logits"]
