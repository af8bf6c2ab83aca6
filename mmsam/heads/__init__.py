from mmsam.heads.sam_decoder import SamDecoderHead, upsample_logits

__all__ = ["SamDecoderHead", "upsample_logits"]
