import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

from mmsam.heads import SamDecoderHead


def _sam_parts(dim: int = 32, grid: int = 8):
    dec = MaskDecoder(
        transformer_dim=dim,
        transformer=TwoWayTransformer(depth=2, embedding_dim=dim, mlp_dim=64, num_heads=2),
        num_multimask_outputs=3,
        iou_head_hidden_dim=32,
    )
    pe = PromptEncoder(embed_dim=dim, image_embedding_size=(grid, grid), input_image_size=(grid * 16, grid * 16), mask_in_chans=4)
    return dec, pe


def test_sam_head_batched_equals_per_image_and_k_outputs():
    torch.manual_seed(0)
    dec, pe = _sam_parts()
    head = SamDecoderHead(dec, pe, num_classes=5).eval()
    feats = torch.randn(3, 32, 8, 8)
    with torch.no_grad():
        batched = head([feats])
        single = torch.cat([head([feats[i : i + 1]]) for i in range(3)])
    assert batched.shape == (3, 5, 32, 32)
    assert torch.allclose(batched, single, atol=1e-5)
    # each class has its own token and hypernetwork MLP, all trainable; the IoU head is frozen
    assert head.decoder.mask_tokens.weight.shape == (5, 32) and len(head.decoder.output_hypernetworks_mlps) == 5
    assert not any(p.requires_grad for p in head.decoder.iou_prediction_head.parameters())
    loss = head([feats]).logsumexp(1).mean()
    loss.backward()
    assert all(p.grad is not None for p in head.parameters() if p.requires_grad)


def test_sam_head_keeps_pretrained_transformer():
    dec, pe = _sam_parts()
    before = {k: v.clone() for k, v in dec.transformer.state_dict().items()}
    head = SamDecoderHead(dec, pe, num_classes=3)
    after = head.decoder.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_frozen_decoder_becomes_trainable_in_head():
    dec, pe = _sam_parts()
    dec.requires_grad_(False)
    head = SamDecoderHead(dec, pe, num_classes=4)
    assert all(p.requires_grad for p in head.decoder.transformer.parameters())
    assert all(p.requires_grad for p in head.decoder.output_upscaling.parameters())
