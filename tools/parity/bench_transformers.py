#!/usr/bin/env python3
"""transformers' side of `cargo run --release -p encoders --bin bench-encoders`.

Two sub-commands, run as separate processes so the timing process's peak memory is not inflated by
creating the checkpoint:

  create --model M --dir D   write a real-size, randomly initialised checkpoint in HF format to D
                             (config.json + model.safetensors; skipped if D/config.json exists)
  time --model M --dir D --batch B --iters K
                             load D with transformers, time the forward on 2 threads
                             (torch.set_num_threads(2), inference_mode, after 2 warm-up runs) and
                             print one JSON line: {"images_per_s", "median_s", "times_s",
                             "peak_rss_mib", "threads", "torch", "transformers"}

Models: dinov2-s14 (facebook/dinov2-small shape: 384 wide, 12 layers, 6 heads, 37×37 positions,
timed at 224 px), clip-l14 (openai/clip-vit-large-patch14 image tower: 1024 wide, 24 layers; the
text tower is shrunk to one small layer because only the image tower is timed).
"""

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers


def make(model: str):
    if model == "dinov2-s14":
        config = transformers.Dinov2Config(
            hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4,
            image_size=518, patch_size=14, layerscale_value=1e-5,
        )
        return transformers.Dinov2Model(config)
    if model == "clip-l14":
        config = transformers.CLIPConfig(
            text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2),
            vision_config=dict(
                hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=14, hidden_act="quick_gelu",
            ),
            projection_dim=768,
        )
        return transformers.CLIPModel(config)
    sys.exit(f"unknown model {model}")


def create(args) -> None:
    d = Path(args.dir)
    if (d / "config.json").exists():
        return
    torch.manual_seed(0)
    model = make(args.model).eval()
    with torch.no_grad():
        # Layer scales at 1e-5 would hide most of the network; use O(1) values like trained models.
        for name, p in model.named_parameters():
            if name.endswith("lambda1"):
                p.uniform_(0.1, 1.0)
    model.save_pretrained(d, safe_serialization=True)


def load(model: str, d: str):
    if model == "dinov2-s14":
        m = transformers.Dinov2Model.from_pretrained(d)
        return m.eval(), lambda x: m(pixel_values=x).pooler_output
    m = transformers.CLIPModel.from_pretrained(d).eval()

    def forward(x):
        out = m.get_image_features(pixel_values=x)
        return getattr(out, "pooler_output", out)

    return m, forward


def time_it(args) -> None:
    torch.set_num_threads(args.threads)
    _, forward = load(args.model, args.dir)
    x = torch.randn(args.batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    times = []
    with torch.inference_mode():
        for _ in range(2):
            forward(x)
        for _ in range(args.iters):
            t = time.perf_counter()
            forward(x)
            times.append(time.perf_counter() - t)
    median = statistics.median(times)
    print(json.dumps({
        "images_per_s": args.batch / median,
        "median_s": median,
        "times_s": times,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=["create", "time"])
    p.add_argument("--model", required=True, choices=["dinov2-s14", "clip-l14"])
    p.add_argument("--dir", required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    create(args) if args.command == "create" else time_it(args)


if __name__ == "__main__":
    main()
