#!/usr/bin/env python3
"""transformers' side of `cargo run --release -p encoders --bin bench-encoders` and
`cargo run --release -p detectors --bin bench-detectors`.

Two sub-commands, run as separate processes so the timing process's peak memory is not inflated by
creating the checkpoint:

  create --model M --dir D   write a real-size, randomly initialised checkpoint in HF format to D
                             (config.json + model.safetensors; for the detectors also
                             preprocessor_config.json and the tiny tokenizer of
                             tests/fixtures/detectors/owlvit_tiny, whose ids are all below the real
                             vocabulary size, with weights re-drawn as the fixtures' `randomize`
                             does; skipped if D/config.json exists; written to D.tmp and
                             renamed, so an interrupted create leaves no half checkpoint)
  time --model M --dir D --batch B --iters K
                             load D with transformers, time the forward on 2 threads
                             (torch.set_num_threads(2), inference_mode, after 2 warm-up runs) and
                             print one JSON line: {"images_per_s", "median_s", "times_s",
                             "peak_rss_mib", "threads", "torch", "transformers"}
  time --model M --dir D --workload W --iters K --warmup U
                             (detectors) W is a JSON file {"template", "threshold", "items":
                             [{"image", "subjects"}]}: each timed call is one image (decoded before
                             timing) with its subjects' queries through the processor, the model and
                             the image processor's post_process_object_detection (items in turn,
                             after U warm-up calls); the JSON line adds "detections" and
                             "top_scores" per call

Models: dinov2-s14 (facebook/dinov2-small shape: 384 wide, 12 layers, 6 heads, 37×37 positions,
timed at 224 px), clip-l14 (openai/clip-vit-large-patch14 image tower: 1024 wide, 24 layers; the
text tower is shrunk to one small layer because only the image tower is timed), owlvit-b32
(google/owlvit-base-patch32: `OwlViTConfig()` defaults, ViT-B/32 at 768 px + the 12-layer text
tower), owlv2-b16 (google/owlv2-base-patch16-ensemble: `Owlv2Config()` defaults with 960 px
images, ViT-B/16, 3600 patches).
"""

import argparse
import json
import resource
import shutil
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
    if model == "owlvit-b32":
        return transformers.OwlViTForObjectDetection(transformers.OwlViTConfig())
    if model == "owlv2-b16":
        config = transformers.Owlv2Config(vision_config=dict(image_size=960))
        return transformers.Owlv2ForObjectDetection(config)
    sys.exit(f"unknown model {model}")


DETECTORS = {"owlvit-b32", "owlv2-b16"}
# The tiny CLIP tokenizer of the detector fixtures (574 ids, all valid in the real 49408 vocabulary).
TOKENIZER = Path(__file__).resolve().parents[2] / "tests/fixtures/detectors/owlvit_tiny"


def processor_class(model: str):
    return transformers.OwlViTProcessor if model == "owlvit-b32" else transformers.Owlv2Processor


def image_processor(model: str):
    if model == "owlvit-b32":
        square = {"height": 768, "width": 768}
        return transformers.OwlViTImageProcessor(size=square, crop_size=square)
    return transformers.Owlv2ImageProcessor(size={"height": 960, "width": 960})


def create(args) -> None:
    d = Path(args.dir)
    if (d / "config.json").exists():
        return
    tmp = d.with_name(d.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    torch.manual_seed(0)
    model = make(args.model).eval()
    if args.model in DETECTORS:
        # transformers' OWL init saturates the heads (logits in the thousands, boxes at 0 or 1);
        # the fixtures' re-draw gives trained-like magnitudes, so scores and boxes are spread.
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from make_encoder_fixtures import randomize

        randomize(model, 0)
    with torch.no_grad():
        # Layer scales at 1e-5 would hide most of the network; use O(1) values like trained models.
        for name, p in model.named_parameters():
            if name.endswith("lambda1"):
                p.uniform_(0.1, 1.0)
    model.save_pretrained(tmp, safe_serialization=True)
    if args.model in DETECTORS:
        image_processor(args.model).save_pretrained(tmp)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(TOKENIZER / name, tmp / name)
        # The processor as from_pretrained sees it (fails here, not in `time`, if anything is off).
        processor_class(args.model).from_pretrained(tmp)
    tmp.rename(d)


def load(model: str, d: str):
    if model == "dinov2-s14":
        m = transformers.Dinov2Model.from_pretrained(d)
        return m.eval(), lambda x: m(pixel_values=x).pooler_output
    m = transformers.CLIPModel.from_pretrained(d).eval()

    def forward(x):
        out = m.get_image_features(pixel_values=x)
        return getattr(out, "pooler_output", out)

    return m, forward


def time_detector(args) -> None:
    from PIL import Image

    torch.set_num_threads(args.threads)
    if args.model == "owlvit-b32":
        model = transformers.OwlViTForObjectDetection.from_pretrained(args.dir).eval()
    else:
        model = transformers.Owlv2ForObjectDetection.from_pretrained(args.dir).eval()
    processor = processor_class(args.model).from_pretrained(args.dir)
    workload = json.loads(Path(args.workload).read_text())
    items = []
    for item in workload["items"]:
        with Image.open(item["image"]) as im:
            image = im.convert("RGB")
        image.load()
        items.append((image, [workload["template"].format(s) for s in item["subjects"]]))
    threshold = workload["threshold"]

    def detect(image, texts):
        inputs = processor(text=texts, images=image, return_tensors="pt")
        out = model(**inputs)
        return processor.image_processor.post_process_object_detection(
            out, threshold=threshold, target_sizes=[(image.height, image.width)]
        )[0]

    times, detections, top_scores = [], [], []
    with torch.inference_mode():
        for i in range(args.warmup):
            detect(*items[i % len(items)])
        for i in range(args.iters):
            t = time.perf_counter()
            result = detect(*items[i % len(items)])
            times.append(time.perf_counter() - t)
            detections.append(len(result["scores"]))
            top_scores.append(float(result["scores"].max()) if len(result["scores"]) else None)
    median = statistics.median(times)
    print(json.dumps({
        "images_per_s": 1 / median,
        "median_s": median,
        "times_s": times,
        "detections": detections,
        "top_scores": top_scores,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }))


def time_it(args) -> None:
    if args.model in DETECTORS:
        return time_detector(args)
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
    p.add_argument("--model", required=True, choices=["dinov2-s14", "clip-l14", *sorted(DETECTORS)])
    p.add_argument("--dir", required=True)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workload", help="detectors: the JSON workload written by bench-detectors")
    p.add_argument("--warmup", type=int, default=1, help="detectors: untimed calls first")
    args = p.parse_args()
    if args.command == "time" and args.model in DETECTORS and not args.workload:
        p.error("timing a detector needs --workload")
    create(args) if args.command == "create" else time_it(args)


if __name__ == "__main__":
    main()
