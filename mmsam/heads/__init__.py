from mmsam.heads.aux_head import MultiScaleAuxHead
from mmsam.heads.sam_decoder import SamDecoderHead, upsample_logits
from mmsam.heads.unetformer import UNetFormerDecoder

__all__ = ["MultiScaleAuxHead", "SamDecoderHead", "UNetFormerDecoder", "upsample_logits"]
