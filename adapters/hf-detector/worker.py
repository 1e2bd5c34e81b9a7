"""scrbench detector worker on Hugging Face transformers (adapters/PROTOCOL.md, `detect`).

Loads one zero-shot object detection checkpoint (`--model`: a hub id or an HF-layout folder) with
`AutoModelForZeroShotObjectDetection` and its `AutoProcessor`, and answers `detect` requests:

- OWL-ViT / OWLv2: every query is `--template` with the subject's name; boxes and scores from the
  processor's `post_process_grounded_object_detection` at `--threshold` (labels index the queries);
- Grounding DINO: the queries joined as one caption (`"cat. dog."`); boxes at `--threshold` and
  tokens at `--text-threshold`; each box's phrase is mapped back to the query it spells (boxes whose
  phrase names no query are dropped and logged).

Then, as scrbench's native detectors do, per-query greedy NMS at `--nms-iou` (boxes sorted by score;
a box is dropped when its IoU with a kept box of the same query exceeds the threshold), and the
result sorted by descending score. Boxes are `[x0, y0, x1, y1]` in the image's pixels.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scrbench_worker import Worker, log, main  # noqa: E402


def iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def nms_per_query(detections: list[dict], threshold: float | None) -> list[dict]:
    ordered = sorted(detections, key=lambda d: -d["score"])  # stable: ties keep their order
    if threshold is None:
        return ordered
    kept: list[dict] = []
    for d in ordered:
        if not any(k["query"] == d["query"] and iou(k["bbox"], d["bbox"]) > threshold for k in kept):
            kept.append(d)
    return kept


class HfDetector(Worker):
    """Open-vocabulary detection with transformers (Grounding DINO, OWL-ViT, OWLv2)."""

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--model", default="IDEA-Research/grounding-dino-tiny")
        parser.add_argument("--revision", default=None)
        parser.add_argument("--template", default="a photo of a {}")
        parser.add_argument("--threshold", type=float, default=0.1)
        parser.add_argument("--text-threshold", type=float, default=0.25)
        parser.add_argument("--nms-iou", type=float, default=None)

    def load(self) -> dict:
        import torch
        import transformers
        from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

        self.torch = torch
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs = {"revision": self.args.revision} if self.args.revision else {}
        self.processor = AutoProcessor.from_pretrained(self.args.model, **kwargs)
        model = AutoModelForZeroShotObjectDetection.from_pretrained(self.args.model, **kwargs)
        self.model = model.eval().to(device)
        self.family = model.config.model_type
        if self.family not in ("owlvit", "owlv2", "grounding-dino"):
            raise ValueError(f"{self.args.model}: model type {self.family!r} is not supported")
        self.device = device
        if device.startswith("cuda"):
            self.device = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
        log(f"hf-detector: {self.args.model} ({self.family}) on {self.device}")
        commit = getattr(model.config, "_commit_hash", None)
        return {
            "id": self.args.model if not os.path.isdir(self.args.model) else Path(self.args.model).name,
            "revision": self.args.revision or commit or "local",
            "family": self.family,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        }

    def detect(self, request: dict) -> list[dict]:
        from PIL import Image

        names = [str(q) for q in request["queries"]]
        if not names:
            return []
        image = Image.open(request["image"]).convert("RGB")
        size = [(image.height, image.width)]
        device = self.model.device
        if self.family == "grounding-dino":
            caption = " ".join(f"{name.lower()}." for name in names)
            inputs = self.processor(images=image, text=caption, return_tensors="pt").to(device)
            with self.torch.inference_mode():
                outputs = self.model(**inputs)
            result = self.processor.post_process_grounded_object_detection(
                outputs, inputs["input_ids"], threshold=self.args.threshold,
                text_threshold=self.args.text_threshold, target_sizes=size,
            )[0]
            lowered = [name.lower() for name in names]
            detections = []
            for score, box, phrase in zip(result["scores"], result["boxes"], result["text_labels"]):
                if phrase not in lowered:
                    log(f"hf-detector: dropped a box for phrase {phrase!r} (no query spells it)")
                    continue
                detections.append({"query": lowered.index(phrase), "score": float(score),
                                   "bbox": [float(v) for v in box]})
        else:
            queries = [self.args.template.replace("{}", name, 1) if "{}" in self.args.template else name
                       for name in names]
            # As OWL was trained (and as scrbench's native OWL does): queries padded to the text
            # tower's length, longer ones truncated to it (keeping the end-of-text token).
            length = self.model.config.text_config.max_position_embeddings
            inputs = self.processor(
                text=[queries], images=image, padding="max_length", truncation=True,
                max_length=length, return_tensors="pt",
            ).to(device)
            with self.torch.inference_mode():
                outputs = self.model(**inputs)
            result = self.processor.post_process_grounded_object_detection(
                outputs, threshold=self.args.threshold, target_sizes=size,
            )[0]
            detections = [
                {"query": int(label), "score": float(score), "bbox": [float(v) for v in box]}
                for score, label, box in zip(result["scores"], result["labels"], result["boxes"])
            ]
        return nms_per_query(detections, self.args.nms_iou)


if __name__ == "__main__":
    main(HfDetector)
