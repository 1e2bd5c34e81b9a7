#!/usr/bin/env python3
"""Fixtures for the `preprocess` crate: synthetic inputs and what PIL / torchvision / transformers
make of them.

Writes (deterministically; re-running rewrites identical files for the same library versions):
  tests/fixtures/preprocess/inputs/<name>.{png,jpg}        synthetic inputs, one per PIL mode
  tests/fixtures/preprocess/expected/<name>.<stage>.png    uint8 stages, lossless PNG (RGB):
      rgb           Image.open(p).convert("RGB")
      dino_resized  (KEEP_RESIZED only) torchvision Resize(256, BICUBIC) of rgb (a PIL image)
      dino_crop     CenterCrop(224) of dino_resized
      clip_resized  (KEEP_RESIZED only) CLIPImageProcessorPil (slow CLIPImageProcessor) resize, shortest edge 224
      clip_crop     its center crop 224
      cmyk_raw      (CMYK input only) PIL's decoded CMYK bytes, stored as an RGBA PNG
  tests/fixtures/preprocess/expected/floats.safetensors
      lut_dino, lut_clip [3, 256] f32   normalised value of every input level per channel,
                                       computed by the real pipelines on a 16x16 image
      dino/<name>, clip/<name> [N] f32  final tensor (CHW, flattened) sampled at 0::STRIDE
  tests/fixtures/preprocess/manifest.json

Optional: --paper-jpegs DIR decodes every JPEG (and PNG) in DIR with PIL (`convert("RGB")`) and
  --pil-out OUT   writes OUT/<stem>.png, for the ignored decoder comparison test;
  --digests FILE  writes FILE (JSON): per file its PIL mode, size and the sha256 of the decoded RGB
                  bytes (row-major, no padding). The committed tests/fixtures/preprocess/
                  paper_decodes.json is this for the paper's references (digests only: the images
                  themselves are never committed). See tools/parity/README.md.
"""

import argparse
import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL
import PIL.features
import safetensors
import torch
import torchvision
import transformers
from PIL import Image
from safetensors.numpy import save_file
from torchvision import transforms as T
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "fixtures" / "preprocess"
STRIDE = 331
# Full resized images are stored for these only (size); the crops are stored for all.
KEEP_RESIZED = ("square_rgb", "tiny_rgb", "large_rgb")


def rng_image(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def textured(w, h, seed):
    """Smooth gradients, stripes, a checkerboard, a disc and a small noise patch: sharp edges
    and texture without being incompressible."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / (6.0 + seed) + y / 13.0)
    g = (x * 255.0 / max(w - 1, 1)).round()
    b = ((x // 7 + y // 5) % 2) * 200.0 + 20.0
    img = np.stack([r, g, b], axis=-1)
    cy, cx, rad = h * 0.45, w * 0.55, min(w, h) * 0.25
    disc = (y - cy) ** 2 + (x - cx) ** 2 < rad**2
    img[disc] = [250, 30, 90]
    img[:, (w // 3) : (w // 3) + 2] = [0, 0, 0]
    img[(h // 4) : (h // 4) + 1, :] = [255, 255, 255]
    ph, pw = min(24, h), min(24, w)
    img[:ph, :pw] = rng_image(ph, pw, seed)
    return np.clip(img, 0, 255).astype(np.uint8)


def smooth_large(w, h):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = (x * 255.0 / (w - 1)).round()
    g = (y * 255.0 / (h - 1)).round()
    b = np.full_like(x, 60.0)
    img = np.stack([r, g, b], axis=-1)
    img[200:500, 300:900] = [240, 240, 30]
    img[((y - 800) ** 2 + (x - 1200) ** 2) < 250**2] = [20, 120, 250]
    img[:, 1000:1003] = [0, 0, 0]
    img[700:702, :] = [255, 255, 255]
    return img.astype(np.uint8)


def write_png_rgb16(path, arr16):
    """16-bit RGB PNG (PIL cannot write one): big-endian samples, filter 0, one IDAT."""
    h, w, _ = arr16.shape
    raw = b"".join(b"\x00" + arr16[i].astype(">u2").tobytes() for i in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    )


def make_inputs(inp):
    """name -> (file, PIL mode of the opened file, decoder exact?)"""
    fx = {}

    def save(name, im, ext="png", **kw):
        p = inp / f"{name}.{ext}"
        im.save(p, **kw)
        fx[name] = p

    save("square_rgb", Image.fromarray(textured(300, 300, 1)))
    save("wide_rgb", Image.fromarray(textured(517, 311, 2)))  # DINO 425x256: crop 100.5 -> 100
    save("tall_rgb", Image.fromarray(textured(97, 403, 3)))  # upsampling
    save("tiny_rgb", Image.fromarray(rng_image(3, 5, 4)))  # 5x3, heavy upsampling
    save("large_rgb", Image.fromarray(smooth_large(1600, 1200)))
    # RGBA: varying alpha, non-trivial colour under alpha = 0.
    rgb = textured(320, 240, 5)
    yy, xx = np.mgrid[0:240, 0:320]
    alpha = ((xx * 255) // 319).astype(np.uint8)
    alpha[:, :60] = 0
    alpha[100:140, :] = 0
    save("rgba", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"))
    gray = textured(200, 260, 6)[..., 0]
    la_alpha = (np.mgrid[0:260, 0:200][0] * 7 % 256).astype(np.uint8)
    save("la", Image.fromarray(np.dstack([gray, la_alpha]), "LA"))
    save("l", Image.fromarray(textured(260, 200, 7)[..., 1], "L"))
    # P without transparency, 300x296: DINO resize 259x256, crop offset round(17.5) = 18.
    pal = Image.fromarray(textured(300, 296, 8)).quantize(colors=64, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    save("p", pal)
    # P with a tRNS chunk of several alpha values.
    p2 = Image.fromarray(textured(240, 180, 9)).quantize(colors=32, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    save("p_trns", p2, transparency=bytes([0, 64, 128, 200] + [255] * 28))
    # 4-bit palette.
    p3 = Image.fromarray(textured(150, 170, 10)).quantize(colors=16, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    save("p4", p3, bits=4)
    # 16-bit gray: mixes values <= 255 (kept) and > 255 (clipped to 255 by PIL).
    g16 = (np.mgrid[0:210, 0:230][1].astype(np.int64) * 37 + np.mgrid[0:210, 0:230][0] * 3) % 700
    g16[:, 115:] *= 90
    save("i16", Image.fromarray(g16.astype(np.uint16)))
    # 16-bit RGB (PIL mode RGB, rawmode RGB;16B: most significant byte).
    rgb16 = textured(130, 110, 11).astype(np.uint16) * 256 + (np.mgrid[0:110, 0:130, 0:3][1] * 2 % 256).astype(np.uint16)
    p = inp / "rgb16.png"
    write_png_rgb16(p, rgb16)
    fx["rgb16"] = p
    # CMYK JPEG, 4:4:4.
    cmyk = np.dstack([textured(260, 230, 12), (np.mgrid[0:230, 0:260][1] % 256).astype(np.uint8)])
    save("cmyk", Image.fromarray(cmyk, "CMYK"), "jpg", quality=92, subsampling=0)
    # Ordinary YCbCr JPEG, 4:2:0.
    save("photo_jpeg", Image.fromarray(textured(180, 140, 13)), "jpg", quality=90)
    return fx


def to_png(path, arr, mode="RGB"):
    Image.fromarray(np.ascontiguousarray(arr), mode).save(path, optimize=False, compress_level=9)


def chw_to_hwc_u8(a):
    a = np.asarray(a)
    assert np.all(a == np.round(a)), "expected integer values"
    return np.moveaxis(a, 0, -1).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--paper-jpegs", type=Path)
    ap.add_argument("--pil-out", type=Path)
    ap.add_argument("--digests", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)

    if args.paper_jpegs:
        assert args.pil_out or args.digests, "--paper-jpegs needs --pil-out and/or --digests"
        if args.pil_out:
            args.pil_out.mkdir(parents=True, exist_ok=True)
        files = {}
        for p in sorted(args.paper_jpegs.iterdir()):
            if p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                im = Image.open(p)
                rgb = np.ascontiguousarray(np.array(im.convert("RGB")), dtype=np.uint8)
                digest = hashlib.sha256(rgb.tobytes()).hexdigest()
                print(p.name, im.mode, im.size, digest)
                if args.pil_out:
                    to_png(args.pil_out / (p.stem + ".png"), rgb)
                files[p.name] = {"pil_mode": im.mode, "size": list(im.size), "rgb_sha256": digest}
        if args.digests:
            doc = {
                "about": "sha256 of PIL Image.open(p).convert('RGB') bytes (row-major RGB, no padding)",
                "versions": {
                    "pillow": PIL.__version__,
                    "libjpeg_turbo": PIL.features.version("libjpeg_turbo"),
                },
                "files": files,
            }
            args.digests.write_text(json.dumps(doc, indent=1) + "\n")
        return

    inp, exp = OUT / "inputs", OUT / "expected"
    inp.mkdir(parents=True, exist_ok=True)
    exp.mkdir(parents=True, exist_ok=True)
    fixtures = make_inputs(inp)

    dino_resize = T.Resize(256, interpolation=T.InterpolationMode.BICUBIC)
    dino_crop = T.CenterCrop(224)
    dino_tensor = T.Compose([T.ToTensor(), T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))])
    clip = CLIPImageProcessorPil()  # defaults == openai/clip-vit-large-patch14 preprocessor_config
    assert clip.size == {"shortest_edge": 224} or clip.size.shortest_edge == 224

    floats = {}
    manifest = {
        "versions": {
            "pillow": PIL.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
            "safetensors": safetensors.__version__,
        },
        "stride": STRIDE,
        "fixtures": [],
    }
    for name, path in fixtures.items():
        im = Image.open(path)
        mode = im.mode
        rgb_im = im.convert("RGB")
        rgb = np.array(rgb_im)
        to_png(exp / f"{name}.rgb.png", rgb)
        if mode == "CMYK":
            to_png(exp / f"{name}.cmyk_raw.png", np.array(im), "RGBA")

        # torchvision (paper's DINO / DINOv2 transform), on the PIL image.
        r = dino_resize(rgb_im)
        c = dino_crop(r)
        if name in KEEP_RESIZED:
            to_png(exp / f"{name}.dino_resized.png", np.array(r))
        to_png(exp / f"{name}.dino_crop.png", np.array(c))
        t = dino_tensor(c).numpy()
        full = dino_tensor(dino_crop(dino_resize(rgb_im))).numpy()
        assert np.array_equal(t, full)
        floats[f"dino/{name}"] = np.ascontiguousarray(full.reshape(-1)[::STRIDE], dtype=np.float32)

        # transformers, slow PIL backend.
        cr = clip(rgb_im, do_center_crop=False, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
        cc = clip(rgb_im, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
        cf = clip(rgb_im, return_tensors="np")["pixel_values"][0]
        if name in KEEP_RESIZED:
            to_png(exp / f"{name}.clip_resized.png", chw_to_hwc_u8(cr))
        to_png(exp / f"{name}.clip_crop.png", chw_to_hwc_u8(cc))
        assert cf.dtype == np.float32 and cf.shape == (3, 224, 224), (cf.dtype, cf.shape)
        floats[f"clip/{name}"] = np.ascontiguousarray(cf.reshape(-1)[::STRIDE], dtype=np.float32)

        manifest["fixtures"].append(
            {
                "name": name,
                "input": str(path.relative_to(OUT)),
                "pil_mode": mode,
                "size": list(im.size),
                "dino_resized": list(r.size),
                "clip_resized": [int(cr.shape[2]), int(cr.shape[1])],
            }
        )
        print(f"{name:12s} {mode:5s} {im.size} dino {r.size} clip {(cr.shape[2], cr.shape[1])}")

    # Per-level lookup tables: an image whose channels each take all 256 values.
    i = np.arange(256)
    lut_img = np.stack([i, 255 - i, (i * 7) % 256], axis=-1).astype(np.uint8).reshape(16, 16, 3)
    lut_pil = Image.fromarray(lut_img)
    d = dino_tensor(lut_pil).numpy().reshape(3, 256)
    cl = clip(lut_pil, do_resize=False, do_center_crop=False, return_tensors="np")["pixel_values"][0].reshape(3, 256)
    flat = lut_img.reshape(256, 3)
    lut_dino = np.zeros((3, 256), np.float32)
    lut_clip = np.zeros((3, 256), np.float32)
    for ch in range(3):
        lut_dino[ch, flat[:, ch]] = d[ch]
        lut_clip[ch, flat[:, ch]] = cl[ch]
    floats["lut_dino"] = lut_dino
    floats["lut_clip"] = lut_clip

    save_file(floats, str(exp / "floats.safetensors"))
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
