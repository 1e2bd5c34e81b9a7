#!/usr/bin/env python3
"""Create the tiny encoder checkpoints and reference outputs used by crates/encoders' parity tests.

Everything is written under tests/fixtures/encoders/ (run from the repository root):

  inputs.safetensors             shared pixel inputs, stored as float16 (both sides upcast to f32)
  dinov2_tiny/                   Dinov2Model, 5x5 position table (needs interpolation at 224)
  dinov2_swiglu_tiny/            Dinov2Model with the SwiGLU MLP (giant-style, mlp.weights_in/out)
  dinov2_registers_tiny/         Dinov2WithRegistersModel, 2 registers, native 224 px
  dino_vits16_tiny/              ViTModel without pooler (facebook/dino-vits16 layout)
  clip_tiny/                     CLIPModel + a tiny byte-level BPE CLIPTokenizer (tokenizer.json)
  <name>.reference.safetensors   expected outputs computed by transformers (and torch-hub-style
                                 interpolation for DINOv2)

Checkpoints are saved with save_pretrained (safetensors), i.e. exactly in the hub's on-disk layout.
Weights are re-drawn with realistic magnitudes (not the tiny default init, which would make the
attention and MLP contributions vanish) and layer scales are random per channel.

Usage: .venv-parity/bin/python tools/parity/make_encoder_fixtures.py
"""

import json
import math
import shutil
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import save_file
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPTokenizer,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
    ViTConfig,
    ViTModel,
)

OUT = Path("tests/fixtures/encoders")
torch.manual_seed(0)


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Re-draw every parameter with realistic magnitudes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda1"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() >= 2 and "position" not in name and "embedding.weight" not in name:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:
                p.copy_(torch.randn(p.shape, generator=g))
    model.eval()


def hub_interpolation(embeddings, height: int, width: int) -> torch.Tensor:
    """torch-hub DINOv2's interpolate_pos_encoding (interpolate_offset=0.1, antialias=False)."""
    pos = embeddings.position_embeddings
    num_patches = (height // embeddings.patch_size) * (width // embeddings.patch_size)
    num_positions = pos.shape[1] - 1
    if num_patches == num_positions and height == width:
        return pos
    cls, patch = pos[:, :1], pos[:, 1:].float()
    dim = pos.shape[-1]
    m = int(math.sqrt(num_positions))
    h0, w0 = height // embeddings.patch_size, width // embeddings.patch_size
    patch = F.interpolate(
        patch.reshape(1, m, m, dim).permute(0, 3, 1, 2),
        scale_factor=((h0 + 0.1) / m, (w0 + 0.1) / m),
        mode="bicubic",
        antialias=False,
    )
    assert patch.shape[-2:] == (h0, w0), patch.shape
    return torch.cat((cls, patch.permute(0, 2, 3, 1).reshape(1, -1, dim)), dim=1)


def save_checkpoint(model, name: str) -> Path:
    path = OUT / name
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path, safe_serialization=True)
    return path


def write(name: str, tensors: dict) -> None:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(OUT / f"{name}.reference.safetensors"))


@torch.inference_mode()
def dinov2_fixtures(inputs: dict) -> None:
    variants = {
        "dinov2_tiny": Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
            image_size=70, patch_size=14, layer_norm_eps=1e-6,
        ),
        "dinov2_swiglu_tiny": Dinov2Config(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
            image_size=70, patch_size=14, use_swiglu_ffn=True,
        ),
    }
    for seed, (name, config) in enumerate(variants.items()):
        model = Dinov2Model(config)
        randomize(model, 100 + seed)
        save_checkpoint(model, name)
        refs = {}
        small = inputs["images_70"]
        for key in ("images_70", "images_224", "images_224x280"):
            x = inputs[key]
            refs[f"hf/{key}"] = model(pixel_values=x).pooler_output
        emb = model.embeddings
        original = emb.interpolate_pos_encoding
        emb.interpolate_pos_encoding = lambda e, h, w, emb=emb: hub_interpolation(emb, h, w)
        for key in ("images_70", "images_224", "images_224x280"):
            refs[f"torch_hub/{key}"] = model(pixel_values=inputs[key]).pooler_output
        emb.interpolate_pos_encoding = original
        assert small.shape[-1] == 70
        write(name, refs)

    config = Dinov2WithRegistersConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
        image_size=224, patch_size=14, num_register_tokens=2,
    )
    model = Dinov2WithRegistersModel(config)
    randomize(model, 200)
    save_checkpoint(model, "dinov2_registers_tiny")
    write("dinov2_registers_tiny", {"hf/images_224": model(pixel_values=inputs["images_224"]).pooler_output})


@torch.inference_mode()
def dino_fixture(inputs: dict) -> None:
    config = ViTConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=224, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-12, qkv_bias=True,
    )
    model = ViTModel(config, add_pooling_layer=False)
    randomize(model, 300)
    save_checkpoint(model, "dino_vits16_tiny")
    out = model(pixel_values=inputs["images_224"]).last_hidden_state[:, 0]
    write("dino_vits16_tiny", {"hf/images_224": out})


def byte_level_alphabet() -> list:
    """GPT-2/CLIP bytes_to_unicode, in CLIP's vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def learn_merges(corpus: str, count: int) -> list:
    words = Counter(corpus.lower().split())
    split = {w: list(w[:-1]) + [w[-1] + "</w>"] for w in words}
    merges = []
    for _ in range(count):
        pairs = Counter()
        for w, n in words.items():
            s = split[w]
            for a, b in zip(s, s[1:]):
                pairs[(a, b)] += n
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        for w in words:
            s, out, i = split[w], [], 0
            while i < len(s):
                if i + 1 < len(s) and s[i] == a and s[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            split[w] = out
    return merges


def tiny_clip_tokenizer() -> CLIPTokenizer:
    corpus = (
        "a photo of the cat and the dog on a red sofa with a blue teapot next to the "
        "woman holding an old camera while the man rides a motorcycle photo photo of of the the"
    )
    alphabet = byte_level_alphabet()
    vocab = alphabet + [c + "</w>" for c in alphabet]
    merges = learn_merges(corpus, 60)
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    vocab = list(dict.fromkeys(vocab))
    tok = CLIPTokenizer(
        vocab={t: i for i, t in enumerate(vocab)},
        merges=[(a, b) for a, b in merges],
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    return tok


PROMPTS = [
    "a photo of a cat",
    "A red sofa, next to the old camera!",
    "the woman holding an old camera while the man rides a motorcycle next to a blue teapot "
    "and a dog on a red sofa with the cat " * 3,
    "dog",
]


@torch.inference_mode()
def clip_fixture(inputs: dict) -> None:
    tok = tiny_clip_tokenizer()
    config = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
            bos_token_id=0, pad_token_id=1, eos_token_id=2,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=224, patch_size=14, hidden_act="quick_gelu",
        ),
        projection_dim=16,
    )
    model = CLIPModel(config)
    randomize(model, 400)
    path = save_checkpoint(model, "clip_tiny")
    tok.save_pretrained(path)
    batch = tok(PROMPTS, padding=True, truncation=True, return_tensors="pt")
    text = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    text = getattr(text, "pooler_output", text)
    singles = []
    for p in PROMPTS:
        one = tok([p], padding=True, truncation=True, return_tensors="pt")
        t = model.get_text_features(**one)
        singles.append(getattr(t, "pooler_output", t))
    image = model.get_image_features(pixel_values=inputs["images_224"])
    image = getattr(image, "pooler_output", image)
    write("clip_tiny", {
        "input_ids": batch["input_ids"].to(torch.int64),
        "attention_mask": batch["attention_mask"].to(torch.int64),
        "text_features": text,
        "text_features_unpadded": torch.cat(singles),
        "hf/images_224": image,
    })
    (OUT / "clip_tiny.prompts.json").write_text(json.dumps(PROMPTS, indent=1) + "\n")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1234)
    raw = {
        "images_70": torch.randn(2, 3, 70, 70, generator=g),
        "images_224": torch.randn(3, 3, 224, 224, generator=g),
        "images_224x280": torch.randn(2, 3, 224, 280, generator=g),
    }
    stored = {k: v.to(torch.float16) for k, v in raw.items()}
    save_file(stored, str(OUT / "inputs.safetensors"))
    inputs = {k: v.to(torch.float32) for k, v in stored.items()}
    dinov2_fixtures(inputs)
    dino_fixture(inputs)
    clip_fixture(inputs)
    (OUT / "VERSIONS.txt").write_text(
        f"torch {torch.__version__}\ntransformers {transformers.__version__}\n"
    )
    print("fixtures written to", OUT)


if __name__ == "__main__":
    main()
