"""Conv-LoRA SAM: the N-token decoder, the paper's losses, the method, the binary folder loader."""
from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from mmsam.adapters import ConvLoRAConfig, LoRAConfig
from mmsam.backbones import create_backbone
from mmsam.data.datasets import create_dataset, get_dataset_entry
from mmsam.errors import ConfigError, DataError
from mmsam.heads.mask_token_head import MaskTokenHead
from mmsam.losses import MaskClassificationLoss, balanced_bce_loss, semantic_inference, structure_loss
from mmsam.methods import ConvLoRASAM

SMALL = dict(r=2, num_experts=3)


# ---- head ------------------------------------------------------------------------------------------


def test_head_tokens_copy_the_first_and_share_one_hypernetwork():
    torch.manual_seed(0)
    bb = create_backbone("sam_vit_tiny", img_size=64)
    first = bb.mask_decoder.mask_tokens.weight[0].detach().clone()
    mlp0 = bb.mask_decoder.output_hypernetworks_mlps[0]
    head = MaskTokenHead(bb.mask_decoder, bb.prompt_encoder, 5, 3)
    dec = head.decoder
    assert torch.equal(dec.mask_tokens.weight, first.expand(5, -1))
    assert all(dec.output_hypernetworks_mlps[i] is mlp0 for i in range(5))
    assert head.class_head.out_features == 4
    assert not any(p.requires_grad for p in dec.iou_prediction_head.parameters())
    feats = [torch.randn(2, 32, 4, 4)]
    masks, classes = head(feats)
    assert masks.shape == (2, 5, 16, 16) and classes.shape == (2, 5, 4)
    # the prompt-free path equals the official predict_masks (same tokens, shared MLP), image by image
    for i in range(2):
        ref, _ = dec.predict_masks(feats[0][i : i + 1], head.pe_layer((4, 4)).unsqueeze(0),
                                   feats[0].new_zeros(1, 0, 32), head.no_mask_embed.reshape(1, -1, 1, 1).expand(1, -1, 4, 4))
        assert torch.allclose(masks[i : i + 1], ref, atol=1e-5)


# ---- losses -------------------------------------------------------------------------------------------


def test_structure_loss_matches_the_official_formula():
    torch.manual_seed(0)
    pred = torch.randn(2, 1, 40, 40)
    mask = (torch.rand(2, 1, 40, 40) > 0.6).float()
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wbce = F.binary_cross_entropy_with_logits(pred, mask, reduce="none")  # the official call: a mean
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    p = torch.sigmoid(pred)
    inter = ((p * mask) * weit).sum(dim=(2, 3))
    union = ((p + mask) * weit).sum(dim=(2, 3))
    official = (wbce + 1 - (inter + 1) / (union - inter + 1)).mean()
    labels = mask[:, 0].long()
    assert torch.isclose(structure_loss(pred, labels), official, atol=1e-6)
    weighted = structure_loss(pred, labels, weighted_bce=True)
    assert not torch.isclose(weighted, official)
    labels[0, :5] = 255  # ignored pixels change the value but keep it finite
    assert torch.isfinite(structure_loss(pred, labels))


def test_balanced_bce_matches_the_official_formula():
    torch.manual_seed(1)
    pred = torch.randn(2, 1, 16, 16)
    mask = (torch.rand(2, 1, 16, 16) > 0.8).float()
    pos, neg = mask.sum() + 1e-10, (1 - mask).sum()
    official = pos / (pos + neg) * torch.nn.BCEWithLogitsLoss(pos_weight=neg / pos)(pred, mask)
    assert torch.isclose(balanced_bce_loss(pred, mask[:, 0].long()), official, atol=1e-6)


def test_mask_classification_matches_queries_to_classes():
    torch.manual_seed(0)
    labels = torch.zeros(1, 32, 32, dtype=torch.long)
    labels[0, :, 16:] = 2
    big = 20.0
    masks = torch.full((1, 4, 8, 8), -big)
    masks[0, 1, :, :4] = big  # query 1 draws the left half (class 0)
    masks[0, 3, :, 4:] = big  # query 3 the right half (class 2)
    classes = torch.full((1, 4, 4), -big)
    classes[0, :, 3] = big  # every query says "no object"...
    classes[0, 1] = torch.tensor([big, -big, -big, -big])  # ...except 1 (class 0) and 3 (class 2)
    classes[0, 3] = torch.tensor([-big, -big, big, -big])
    loss = MaskClassificationLoss(3, num_points=256)
    (q, t), = loss.match(masks, classes, [(torch.tensor([0, 2]), (labels[0][None] == torch.tensor([0, 2])[:, None, None]).float())])
    assert dict(zip(q.tolist(), t.tolist())) == {1: 0, 3: 1}
    terms = loss(masks, classes, labels)
    assert set(terms) == {"mask_ce", "mask_bce", "mask_dice"}
    # (unweighted, as AutoGluon sums them; the importance-sampled points sit on the blurred boundary of the 8x8 logits)
    assert terms["mask_ce"] < 1e-6 and terms["mask_dice"] < 0.1 and terms["mask_bce"] < 0.5
    empty = loss(torch.full_like(masks, -big), classes, labels)  # no query draws anything
    assert empty["mask_dice"] > 0.9 and empty["mask_bce"] > 10 * terms["mask_bce"]
    swapped = masks[:, [0, 3, 2, 1]]
    assert loss(swapped, classes, labels)["mask_ce"] > 1  # matched by mask, so the classes are now wrong
    labels[0, :4] = 255  # ignored pixels belong to no class mask (HF / official): the masks there now cost
    assert loss(masks, classes, labels)["mask_dice"] > terms["mask_dice"]
    wrong = classes.clone()
    wrong[0, 1], wrong[0, 3] = classes[0, 3], classes[0, 1]
    assert loss(masks, wrong, labels)["mask_ce"] > 1
    # semantic inference: the matched queries' class times their mask
    sem = semantic_inference(masks, classes)
    assert sem.shape == (1, 3, 8, 8) and sem.argmax(1)[0, 0, 0] == 0 and sem.argmax(1)[0, 0, 7] == 2


# ---- method ---------------------------------------------------------------------------------------------


def _batch(k: int, b: int = 2, size: int = 64) -> dict:
    label = torch.randint(0, k, (b, size, size))
    label[:, :3] = 255
    return {"modalities": {"rgb": torch.randn(b, 3, size, size), "depth": torch.randn(b, 3, size, size)},
            "present": {"rgb": torch.ones(b, dtype=torch.bool), "depth": torch.tensor([True, False])}, "label": label}


@pytest.mark.parametrize("backbone", ["sam_vit_tiny", "sam2_hiera_micro"])
def test_binary_method(backbone):
    torch.manual_seed(0)
    m = ConvLoRASAM(2, ["rgb", "depth"], backbone=backbone, img_size=64, adapter=ConvLoRAConfig(**SMALL))
    assert m.binary and m.head.num_tokens == 1 and m.head.class_head is None
    out = m(_batch(2))
    assert out["logits"].shape == (2, 2, 64, 64) and torch.all(out["logits"][:, 0] == 0)
    assert set(out["losses"]) == {"structure", "balance"}
    sum(out["losses"].values()).backward()
    groups = m.param_groups()
    assert m.head.decoder.mask_tokens.weight.grad is not None
    trainable = {id(p) for p in m.parameters() if p.requires_grad}
    assert trainable == {id(p) for ps in groups.values() for p in ps}
    assert all(".conv_lora." in n for n, p in m.backbone.named_parameters() if p.requires_grad)
    m.eval()
    with torch.no_grad():
        ev = m(_batch(2))
    assert set(ev) == {"logits"}
    shadow = ConvLoRASAM(2, ["rgb", "depth"], backbone=backbone, img_size=64, adapter=ConvLoRAConfig(**SMALL), binary_loss="balanced_bce")
    assert "balanced_bce" in shadow(_batch(2))["losses"]


@pytest.mark.parametrize("backbone", ["sam_vit_tiny", "sam2_hiera_micro"])
def test_mask_classification_method(backbone):
    torch.manual_seed(0)
    m = ConvLoRASAM(num_classes=4, modalities=["rgb", "depth"], backbone=backbone, img_size=64,
                      adapter=ConvLoRAConfig(**SMALL), num_mask_tokens=6, num_points=256)
    assert not m.binary and m.head.num_tokens == 6
    out = m(_batch(4))
    assert out["logits"].shape == (2, 4, 64, 64)
    assert set(out["losses"]) == {"mask_ce", "mask_bce", "mask_dice", "balance"}
    sum(out["losses"].values()).backward()
    assert m.head.class_head.weight.grad is not None and m.head.decoder.mask_tokens.weight.grad is not None


def test_method_with_plain_lora_and_errors():
    m = ConvLoRASAM(2, ["rgb"], backbone="sam_vit_tiny", img_size=64, adapter=LoRAConfig(r=3, alpha=32))
    assert set(m(_batch(2) | {"modalities": {"rgb": torch.randn(2, 3, 64, 64)}, "present": {}})["losses"]) == {"structure"}
    with pytest.raises(ConfigError, match="num_classes=2"):
        ConvLoRASAM(3, ["rgb"], backbone="sam_vit_tiny", img_size=64, head="binary")
    with pytest.raises(ConfigError, match="one mask token"):
        ConvLoRASAM(2, ["rgb"], backbone="sam_vit_tiny", img_size=64, num_mask_tokens=3)
    with pytest.raises(ConfigError, match="img_size"):
        m({"modalities": {"rgb": torch.randn(1, 3, 32, 32)}})


# ---- the binary folder loader ----------------------------------------------------------------------------


def _write_set(root, *, split_tests: bool = True) -> None:
    """A Conv-LoRA-style task folder: images/masks listed in CSVs with a pandas index column."""
    rng = np.random.default_rng(0)
    rows = {"train": [], "val": [], "test_Kvasir": [], "test_CVC-ClinicDB": []} if split_tests else {"train": [], "val": [], "test": []}
    for split in rows:
        for i in range(2):
            img = f"{split}/images/{i:03d}.jpg"
            msk = f"{split}/masks/{i:03d}.png"
            (root / img).parent.mkdir(parents=True, exist_ok=True)
            (root / msk).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / img)
            m = np.zeros((24, 32), np.uint8)
            m[:, 16:] = 255 if i == 0 else 1  # 0/255 and 0/1 masks
            if split == "val" and i == 1:
                m = np.zeros((12, 16), np.uint8)
                m[:, 8:] = 255  # a mask of half the image size
            Image.fromarray(m).save(root / msk)
            rows[split].append((i, img, msk))
    for split, entries in rows.items():
        with open(root / f"{split}.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["", "image", "label"])
            w.writerows(entries)


def test_binary_folder_reads_the_official_layout(tmp_path):
    task = tmp_path / "polyp"
    (task / "polyp").mkdir(parents=True)
    _write_set(task / "polyp")
    entry = get_dataset_entry("binary_folder")
    assert entry.classes == ("background", "foreground") and entry.has_data(task)
    ds = create_dataset("binary_folder", root=task, split="train")  # the parent folder works too
    item = ds[0]
    assert item["modalities"]["rgb"].shape == (3, 24, 32) and item["label"].dtype == torch.long
    for i in range(2):
        lab = ds[i]["label"]
        assert torch.all(lab[:, :16] == 0) and torch.all(lab[:, 16:] == 1)
    assert item["meta"] == {"id": "train/images/000", "condition": "", "case": "train"}
    val = create_dataset("binary_folder", root=task / "polyp", split="val")
    assert val[1]["label"].shape == (24, 32) and torch.all(val[1]["label"][:, 16:] == 1)
    test = create_dataset("binary_folder", root=task / "polyp", split="test")
    assert len(test) == 4 and {s.case for s in test.samples} == {"Kvasir", "CVC-ClinicDB"}
    kvasir = create_dataset("binary_folder", root=task / "polyp", split="test", cases=["Kvasir"])
    assert len(kvasir) == 2 and kvasir[0]["meta"]["case"] == "Kvasir"


def test_binary_folder_errors(tmp_path):
    _write_set(tmp_path, split_tests=False)
    assert len(create_dataset("binary_folder", root=tmp_path, split="test")) == 2
    with pytest.raises(ConfigError, match="unknown cases"):
        create_dataset("binary_folder", root=tmp_path, split="test", cases=["Kvasir"])
    with pytest.raises(ConfigError, match="one modality"):
        create_dataset("binary_folder", root=tmp_path, modalities=["rgb", "depth"])
    with pytest.raises(ConfigError, match="conditions"):
        create_dataset("binary_folder", root=tmp_path, conditions=["fog"])
    (tmp_path / "train" / "masks" / "001.png").unlink()
    with pytest.raises(DataError, match="001.png: missing mask"):
        create_dataset("binary_folder", root=tmp_path, split="train")
    with pytest.raises(DataError, match="no split CSVs"):
        create_dataset("binary_folder", root=tmp_path / "nothing", split="train")


def test_binary_folder_passes_the_dataset_check(tmp_path):
    from mmsam.data.check import check_dataset

    _write_set(tmp_path)
    report = check_dataset("binary_folder", tmp_path)
    assert report.ok, report.format()
    assert {k: v.samples for k, v in report.splits.items()} == {"train": 2, "val": 2, "test": 4}
    (tmp_path / "val" / "masks" / "000.png").unlink()
    bad = check_dataset("binary_folder", tmp_path)
    assert [p.kind for p in bad.problems] == ["missing"] and "000.png" in bad.problems[0].path
