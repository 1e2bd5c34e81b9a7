#!/usr/bin/env python3
"""Create the tiny OWL-ViT / OWLv2 checkpoints and reference outputs used by crates/detectors' tests.

Everything is written under tests/fixtures/detectors/ (run from the repository root):

  owlvit_tiny/                 OwlViTForObjectDetection (google/owlvit-base-patch32 layout), 64 px,
                               patch 16 (kept small: a patch-32 stem alone would be 400 KB), + the tiny byte-level BPE CLIPTokenizer of the encoder fixtures
  owlv2_tiny/                  Owlv2ForObjectDetection (google/owlv2-base-patch16-ensemble layout),
                               80 px, patch 16, same tokenizer
  <name>.reference.safetensors inputs and transformers outputs:
                                 pixels            fixed random pixel batch (2 images), float16
                                 input_ids         the queries as the processor tokenises them
                                 logits            (2, patches, queries) class logits
                                 pred_boxes        (2, patches, 4) cx, cy, w, h in [0, 1]
                                 objectness_logits (2, patches) (OWLv2 only)
                                 image_u8          (h, w, 3) a small synthetic RGB image
                                 image_pixels      that image through the checkpoint's image
                                                   processor (transformers' default backend)
                                 image_logits, image_pred_boxes  the model on image_pixels
                                 image2_pixels     (OWL-ViT only) the processor on the OWLv2
                                                   fixture's 150x211 image_u8
  <name>.detections.json       queries, template, threshold, and post_process_object_detection on
                               the pixel batch (target sizes given) and on the image (its own size)

Usage: .venv-parity/bin/python tools/parity/make_detector_fixtures.py
"""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
import transformers
from safetensors.torch import save_file
from transformers import (
    Owlv2Config,
    Owlv2ForObjectDetection,
    Owlv2ImageProcessor,
    OwlViTConfig,
    OwlViTForObjectDetection,
    OwlViTImageProcessor,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_encoder_fixtures import randomize, tiny_clip_tokenizer  # noqa: E402

OUT = Path("tests/fixtures/detectors")
SUBJECTS = ["cat", "dog", "red sofa"]
TEMPLATE = "a photo of a {}"
THRESHOLD = 0.3
MAX_TEXT = 16


def config(cls, image_size: int, patch: int, vocab: int):
    return cls(
        text_config=dict(
            vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=MAX_TEXT, hidden_act="quick_gelu",
            bos_token_id=vocab - 2, eos_token_id=vocab - 1, pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=image_size, patch_size=patch, hidden_act="quick_gelu",
        ),
        projection_dim=32,
    )


def synthetic_image(h: int, w: int) -> np.ndarray:
    """A smooth RGB image with a few sharp rectangles (deterministic)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([
        127 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0),
        (x * 255.0 / max(w - 1, 1)),
        (y * 255.0 / max(h - 1, 1)),
    ], axis=-1)
    img[h // 4: h // 2, w // 5: w // 2] = [250, 20, 30]
    img[h // 2: h - 3, w // 2: w - 4] = [10, 200, 40]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def detections(result, queries) -> list:
    return [
        {"query": int(l), "score": float(s), "bbox": [float(v) for v in b]}
        for s, l, b in zip(result["scores"], result["labels"], result["boxes"])
    ]


@torch.inference_mode()
def fixture(name, model_cls, config_cls, processor, image_size, patch, seed, image_hw, extra_image=None):
    tok = tiny_clip_tokenizer()
    cfg = config_cls and config(config_cls, image_size, patch, len(tok))
    model = model_cls(cfg)
    randomize(model, seed)
    path = OUT / name
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path, safe_serialization=True)
    tok.model_max_length = MAX_TEXT
    # The OWL tokenizers pad with "!" (id 0), unlike CLIP's; `query_mask = input_ids[..., 0] > 0`.
    tok.pad_token = "!"
    tok.save_pretrained(path)
    processor.save_pretrained(path)

    queries = [TEMPLATE.format(s) for s in SUBJECTS]
    # As OwlViTProcessor / Owlv2Processor: pad to max_length (16) with the pad token.
    ids = tok(queries, padding="max_length", max_length=MAX_TEXT, truncation=True, return_tensors="pt")
    g = torch.Generator().manual_seed(seed + 1)
    # Stored as float16 (both sides upcast to f32) to keep the fixture small.
    pixels = torch.randn(2, 3, image_size, image_size, generator=g).to(torch.float16).to(torch.float32)
    input_ids = ids["input_ids"].repeat(2, 1)
    mask = ids["attention_mask"].repeat(2, 1)
    out = model(input_ids=input_ids, pixel_values=pixels, attention_mask=mask)
    tensors = {
        "pixels": pixels.to(torch.float16),
        "input_ids": ids["input_ids"].to(torch.int64),
        "logits": out.logits,
        "pred_boxes": out.pred_boxes,
    }
    if hasattr(out, "objectness_logits") and out.objectness_logits is not None:
        tensors["objectness_logits"] = out.objectness_logits
    sizes = [(480, 640), (333, 200)]
    batch_dets = processor.post_process_object_detection(out, threshold=THRESHOLD, target_sizes=sizes)

    h, w = image_hw
    img = synthetic_image(h, w)
    proc = processor(images=[img], return_tensors="pt")
    image_pixels = proc["pixel_values"]
    out_img = model(input_ids=ids["input_ids"], pixel_values=image_pixels, attention_mask=ids["attention_mask"])
    image_dets = processor.post_process_object_detection(out_img, threshold=THRESHOLD, target_sizes=[(h, w)])
    tensors.update({
        "image_u8": torch.from_numpy(img),
        "image_pixels": image_pixels,
        "image_logits": out_img.logits,
        "image_pred_boxes": out_img.pred_boxes,
    })
    if extra_image is not None:
        # A second shape (downscaling on both axes) for the preprocessing check.
        tensors["image2_pixels"] = processor(images=[extra_image], return_tensors="pt")["pixel_values"]
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / f"{name}.reference.safetensors"))
    meta = {
        "subjects": SUBJECTS,
        "template": TEMPLATE,
        "queries": queries,
        "threshold": THRESHOLD,
        "batch_target_sizes": sizes,
        "batch": [detections(r, queries) for r in batch_dets],
        "image_size": [h, w],
        "image": detections(image_dets[0], queries),
        "image_processor": type(processor).__name__,
    }
    (OUT / f"{name}.detections.json").write_text(json.dumps(meta, indent=1) + "\n")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fixture(
        "owlvit_tiny", OwlViTForObjectDetection, OwlViTConfig,
        OwlViTImageProcessor(size={"height": 64, "width": 64}, crop_size={"height": 64, "width": 64}),
        64, 16, 500, (50, 83), extra_image=synthetic_image(150, 211),
    )
    fixture(
        "owlv2_tiny", Owlv2ForObjectDetection, Owlv2Config,
        Owlv2ImageProcessor(size={"height": 80, "width": 80}),
        80, 16, 600, (150, 211),
    )
    (OUT / "VERSIONS.txt").write_text(
        f"torch {torch.__version__}\ntransformers {transformers.__version__}\n"
    )
    print("fixtures written to", OUT)


if __name__ == "__main__":
    main()
