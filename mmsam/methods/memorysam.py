"""MemorySAM: modalities as the frames of a SAM 2 video, plus a semantic prototype memory.

Liao et al., "MemorySAM: Memorize Modalities and Semantics with Segment Anything Model 2 for
Multi-modal Semantic Segmentation", arXiv 2503.06700; official code
https://github.com/Chenfei-Liao/MemorySAM (choices where paper and code are vague, and the measured
parity with ``LoRA_Sam``: ``docs/methods/memorysam.md``).

- One LoRA shared by all modalities on the frozen Hiera encoder (rank 4 on q and v, official ``LoRA_Sam``);
  every present modality goes through the encoder in one batched pass.
- The modalities, in config order, are the frames of one sequence run through the official
  ``SAM2Base`` steps (official ``sam2_base.py``): frame 0 adds ``no_mem_embed`` and goes straight to the mask decoder;
  frame t > 0 cross-attends (memory attention) to the memories and object pointers of frames
  0..t-1, all stored as conditioning frames; each frame's prediction is encoded by the memory
  encoder into the next frames' memory.
- SAM 2's decoder with ``num_multimask_outputs = K`` (K + 1 tokens, token 0 dropped), the IoU
  head re-initialised and frozen (official ``train_sam2_lora.py``).
- The prediction is the mean of the per-modality K-class logits (memory residual, paper Eq. 6).
- Training only: the semantic prototype memory and its loss (``mmsam.losses.prototype``),
  returned under ``out["losses"]["proto"]``; OHEM CE is the task's ``loss: ohem``.

A sample lacking a modality runs a shorter sequence: samples are grouped by which modalities
they have, and each group runs its own sequence, so a sample's output does not depend on the
rest of the batch.
"""
from __future__ import annotations

from typing import Any, Literal, Sequence

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import NO_OBJ_SCORE
from torch import nn

from mmsam.adapters import AdapterConfig, LoRAConfig
from mmsam.errors import ConfigError
from mmsam.heads import upsample_logits
from mmsam.heads.sam_decoder import with_class_tokens
from mmsam.losses.prototype import SemanticPrototypeMemory
from mmsam.methods.base import SegmentationMethod


class MemorySAM(SegmentationMethod):
    """Shared LoRA on SAM 2 + modalities as memory frames + K-class decoder + SPMM (training).

    Args:
        num_classes, modalities: given by the data module; the modalities' order is the frame order.
        backbone: a SAM 2 backbone; ``sam2_hiera_b+`` (SAM 2, not 2.1) in the paper (official ``train_sam2_lora.py``).
        img_size: input size (SAM 2's ``image_size``; inputs must have this size).
        checkpoint: official SAM 2 file (``sam2_hiera_base_plus.pt``…), or ``None`` (random weights).
        adapter: the encoder adapter: plain LoRA keys, or any registered adapter by ``class_path``
            (e.g. Conv-LoRA; a modality-aware one gets one expert / stream per modality).
            ``None``: LoRA shared by all modalities, rank 4 on q and v, scale 1, ``slice_width="in"`` (official ``LoRA_Sam``).
        train_memory: train memory attention and memory encoder (the paper / final code); ``False``
            freezes them (the March 2025 code, the ~57.6 R-D ablation of issue #3).
        object_score_gate: keep SAM 2's object-score gate, which replaces all K logits of a frame by
            -1024 when its (frozen) object score is <= 0 (faithful to SAM 2's ``sam2_base.py``); ``False`` disables it.
        spmm: train with the semantic prototype memory (its loss under ``out["losses"]["proto"]``).
        spmm_momentum: weight of the current batch in the global prototype update (0.2).
        spmm_weight: lambda (1).
        spmm_form: ``"code"`` (double normalisation, x65536) or ``"clean"``; see ``mmsam.losses.prototype``.
    """

    def __init__(
        self,
        num_classes: int,
        modalities: Sequence[str],
        *,
        backbone: str = "sam2_hiera_b+",
        img_size: int = 1024,
        checkpoint: str | None = None,
        adapter: LoRAConfig | AdapterConfig | None = None,
        train_memory: bool = True,
        object_score_gate: bool = True,
        spmm: bool = True,
        spmm_momentum: float = 0.2,
        spmm_weight: float = 1.0,
        spmm_form: Literal["code", "clean"] = "code",
    ) -> None:
        super().__init__(num_classes, modalities)
        # None rather than an instance default (see SamLoRA)
        adapter = adapter if adapter is not None else LoRAConfig(r=4, parts=["q", "v"], slice_width="in")
        # K + 1 tokens: SAM 2's multimask output drops token 0 and keeps the K class maps (official ``sam2_base.py``)
        self.build_frozen(
            backbone, img_size=img_size, checkpoint=checkpoint, adapter=adapter, family="sam2",
            family_why="it runs SAM 2's memory modules", with_memory=True, exact_input_size=True,
            head=lambda bb: with_class_tokens(bb.sam2_model.sam_mask_decoder, num_classes + 1, reset_iou_head=True),
            head_attr="decoder",
        )
        sam2 = self.backbone.sam2_model
        if sam2.memory_attention is None or sam2.memory_encoder is None:
            raise ConfigError(f"backbone {backbone!r} has no memory modules")
        for p in sam2._parameters.values():  # the loose SAM 2 tensors: no_mem_embed, maskmem_tpos_enc, no_obj_ptr…
            if p is not None:
                p.requires_grad_(True)
        # every frame is a conditioning frame and frame 0 adds no_mem_embed directly, so
        # no_mem_pos_enc never enters the graph (in the official code either): frozen, or DDP
        # would wait for its gradient and the processes drift apart
        if isinstance(getattr(sam2, "no_mem_pos_enc", None), nn.Parameter):
            sam2.no_mem_pos_enc.requires_grad_(False)
        sam2.memory_attention.requires_grad_(train_memory)
        sam2.memory_encoder.requires_grad_(train_memory)
        if not object_score_gate:
            sam2.pred_obj_scores = False  # no -1024 gate on logits, no no-object pointer mixing
            if isinstance(getattr(sam2, "no_obj_ptr", None), nn.Parameter):
                sam2.no_obj_ptr.requires_grad_(False)  # unused without the gate
        self.object_score_gate = object_score_gate
        self.upsample_all = False  # True: SAM 2's own heads step, upsampling all K + 1 maps (benchmark arm)
        self.spmm = (
            SemanticPrototypeMemory(num_classes, self.decoder.conv_s0.out_channels, momentum=spmm_momentum,
                                    weight=spmm_weight, form=spmm_form)
            if spmm
            else None
        )
        self.train()  # official builders return eval-mode modules; dropout must follow the task's mode

    @property
    def sam2(self) -> nn.Module:
        return self.backbone.sam2_model

    # ---- forward -----------------------------------------------------------------------
    def forward_features(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Encoder levels per modality ``(M, B, C, h, w)``: stride 4 / 8 through ``conv_s0`` /
        ``conv_s1`` (as ``SAM2Base.forward_image``), raw stride 16; and the SPMM loss in training."""
        levels, names, present = self.encode(self.backbone, batch)
        m, b = present.shape
        s0 = self.decoder.conv_s0(levels[0].flatten(0, 1)).unflatten(0, (m, b))
        s1 = self.decoder.conv_s1(levels[1].flatten(0, 1)).unflatten(0, (m, b))
        feats: dict[str, Any] = {"s0": s0, "s1": s1, "s16": levels[2], "names": names, "present": present}
        if self.training and self.spmm is not None and "label" in batch:
            # Eq. 7: the modality-mean stride-4 features, before memory attention (official ``train_sam2_lora.py``)
            feats["proto_loss"] = self.spmm(self.mean_fusion(s0, present), batch["label"])
        return feats

    def forward_head(self, features: dict[str, Any], size: torch.Size) -> dict[str, Any]:
        s0, s1, s16, present = features["s0"], features["s1"], features["s16"], features["present"]
        names = features["names"]
        m, b = present.shape
        pattern = present.bool().T  # (B, M)
        groups, inverse = torch.unique(pattern.long(), dim=0, return_inverse=True)
        logits = None
        per_mod: dict[str, torch.Tensor] = {}
        scores: dict[str, torch.Tensor] = {}
        for g, row in enumerate(groups.bool()):
            order = [i for i in range(m) if row[i]]
            if len(groups) == 1:
                idx = None
                frames = [(s0[i], s1[i], s16[i]) for i in order]
            else:
                idx = (inverse == g).nonzero().squeeze(1)
                frames = [(s0[i, idx], s1[i, idx], s16[i, idx]) for i in order]
            frame_logits, frame_scores = self.run_frames(frames)
            mean = torch.stack(frame_logits).mean(0)  # memory residual: mean of the logits (Eq. 6)
            if idx is None:
                logits = mean
            else:
                if logits is None:
                    logits = mean.new_zeros(b, *mean.shape[1:])
                logits = logits.index_put((idx,), mean)
            for i, lg, sc in zip(order, frame_logits, frame_scores):
                name = names[i]
                if name not in per_mod:
                    per_mod[name] = lg.new_full((b, *lg.shape[1:]), float("nan"))
                    scores[name] = sc.new_full((b,), float("nan"))
                if idx is None:
                    per_mod[name], scores[name] = lg, sc.reshape(-1)
                else:
                    per_mod[name] = per_mod[name].index_put((idx,), lg)
                    scores[name] = scores[name].index_put((idx,), sc.reshape(-1))
        out: dict[str, Any] = {
            "logits": upsample_logits(logits, tuple(size)),
            # low-res (B, K, H/4, W/4) in frame order; NaN for samples lacking the modality
            "per_modality": {n: per_mod[n] for n in names if n in per_mod},
            "object_scores": {n: scores[n] for n in names if n in scores},  # (B,); the gate fires where <= 0
        }
        if "proto_loss" in features:
            out["losses"] = {"proto": features["proto_loss"]}
        return out

    def run_frames(self, frames: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Run one modality sequence through SAM 2's tracking steps.

        ``frames``: per modality, in order, ``(s0 (N, C0, 4h, 4w), s1 (N, C1, 2h, 2w), s16 (N, C, h, w))``.
        Returns per frame the low-resolution K-class logits ``(N, K, 4h, 4w)`` and object scores ``(N, 1)``.
        """
        sam2 = self.sam2
        n_frames = len(frames)
        h, w = frames[0][2].shape[-2:]
        pos = self.backbone.image_encoder.neck.position_encoding(frames[0][2][:1]).to(frames[0][2].dtype)
        pos = pos.flatten(2).permute(2, 0, 1).expand(-1, frames[0][2].shape[0], -1)  # (hw, N, C)
        bank: dict[str, dict[int, Any]] = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        logits, scores = [], []
        for t, (s0, s1, s16) in enumerate(frames):
            vis = s16.flatten(2).permute(2, 0, 1)  # (hw, N, C), SAM 2's layout
            # t = 0: + no_mem_embed, no memory attention; t > 0: attend to all earlier frames' memories
            pix = sam2._prepare_memory_conditioned_features(
                frame_idx=t, is_init_cond_frame=t == 0, current_vision_feats=[vis],
                current_vision_pos_embeds=[pos], feat_sizes=[(h, w)], output_dict=bank, num_frames=n_frames,
            )
            # no prompt (SAM 2 pads one point labelled -1); multimask = the K class maps
            low_multi, high_best, obj_ptr, obj_score = self.sam_heads(pix, [s0, s1])
            logits.append(low_multi)
            scores.append(obj_score)
            if t < n_frames - 1:  # the last frame's memory would never be read
                # memory: the mask of the class with the highest predicted IoU, fused with the raw features (SAM 2's ``_encode_new_memory``)
                mem, mem_pos = sam2._encode_new_memory(
                    current_vision_feats=[vis], feat_sizes=[(h, w)], pred_masks_high_res=high_best,
                    object_score_logits=obj_score, is_mask_from_pts=False,
                )
                bank["cond_frame_outputs"][t] = {"maskmem_features": mem, "maskmem_pos_enc": mem_pos, "obj_ptr": obj_ptr}
        return logits, scores

    def sam_heads(
        self, pix: torch.Tensor, high_res: list[torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """SAM 2's ``_forward_sam_heads`` without a prompt, multimask output, upsampling only the mask the memory uses.

        ``SAM2Base._forward_sam_heads`` (official ``sam2_base.py``) upsamples all K + 1 low-resolution
        maps to the input size and then keeps the one with the highest predicted IoU; bilinear
        interpolation acts on each map alone, so picking first gives the same mask (bit for bit) and
        saves K full-size maps per frame, forward and backward. With ``upsample_all = True`` the
        official method runs instead (the benchmark's "off" arm).
        Returns the K-class low-res logits, the best full-size mask, the object pointer and the object score.
        """
        sam2 = self.sam2
        if self.upsample_all:
            low_multi, _, _, _, high_best, obj_ptr, obj_score = sam2._forward_sam_heads(
                backbone_features=pix, high_res_features=high_res, multimask_output=True,
            )
            return low_multi, high_best, obj_ptr, obj_score
        n = pix.shape[0]
        points = (torch.zeros(n, 1, 2, device=pix.device), -torch.ones(n, 1, dtype=torch.int32, device=pix.device))
        sparse, dense = sam2.sam_prompt_encoder(points=points, boxes=None, masks=None)  # one padding point, no mask
        low_multi, ious, tokens, obj_score = sam2.sam_mask_decoder(
            image_embeddings=pix, image_pe=sam2.sam_prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=True, repeat_image=False, high_res_features=high_res,
        )
        if sam2.pred_obj_scores:  # the object-score gate: a frame without an object gets NO_OBJ_SCORE everywhere
            low_multi = torch.where((obj_score > 0)[:, None, None], low_multi, NO_OBJ_SCORE)
        low_multi = low_multi.float()
        best = torch.argmax(ious, dim=-1)
        rows = torch.arange(n, device=pix.device)
        high_best = F.interpolate(low_multi[rows, best].unsqueeze(1), size=(sam2.image_size, sam2.image_size),
                                  mode="bilinear", align_corners=False)
        token = tokens[rows, best] if tokens.shape[1] > 1 else tokens[:, 0]
        obj_ptr = sam2.obj_ptr_proj(token)
        if sam2.pred_obj_scores:  # soft / hard no-object pointer, as SAM 2
            appearing = obj_score.sigmoid() if sam2.soft_no_obj_ptr else (obj_score > 0).float()
            if sam2.fixed_no_obj_ptr:
                obj_ptr = appearing * obj_ptr
            obj_ptr = obj_ptr + (1 - appearing) * sam2.no_obj_ptr
        return low_multi, high_best, obj_ptr, obj_score

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """``adapters``: the shared LoRA; ``heads``: the mask decoder; ``fusion``: memory attention,
        memory encoder and the loose SAM 2 parameters."""
        adapters = [p for p in self.backbone.image_encoder.parameters() if p.requires_grad]
        heads = [p for p in self.decoder.parameters() if p.requires_grad]
        taken = {id(p) for p in adapters + heads}
        fusion = [p for p in self.sam2.parameters() if p.requires_grad and id(p) not in taken]
        return {"adapters": adapters, "fusion": fusion, "heads": heads}
