#!/usr/bin/env python3
"""Paper-faithful reference for the per-image metrics of `scripts/eval.py`.

Follows the metric semantics of the paper's evaluation script (repository
ZHIHANCHEN03/Multi-Subject-Personalization-Evaluation-P13N-Workshop-, branch temp_final_v1, commit
012ae6dbc1ad7cb39dbda75c2ec5da8cb1a1b92e) with three deliberate differences:

  * checkpoints are HF directories (`--dinov2`, `--dino`, `--clip`), not torch-hub / hub downloads;
    DINOv2 gets the torch-hub position interpolation (scale_factor=((h0+0.1)/M, (w0+0.1)/M), bicubic,
    antialias=False) patched into HF's `Dinov2Model`; DINO v1 (`ViTModel`, no pooler) must have a
    patch grid equal to its position table at 224 px, where torch-hub does not interpolate either;
  * images are located by the folder layout (results/<model>/<prompt_id>/<seed>.png) and the prompt /
    subjects come from val_dataset/prompts_50.txt (cross-checked against meta.json when present);
  * nothing is skipped silently: a missing image, reference or encoder is an error, and SCR is always
    computed from DINOv2 (never the script's CLIP fallback).

Like the paper's script it works one image at a time (batch 1) and re-embeds every reference for
every generated image (no caching): this is the "paper-faithful" speed baseline.

Per image with N references (cos = float32 dot product of L2-normalised float32 embeddings, as
`(a * b).sum(-1).mean().item()`; means over references are Python float64 sums / N):
  clip_t  = cos(CLIP_image(gen), CLIP_text(prompt))
  clip_i  = mean_i cos(CLIP_image(gen), CLIP_image(ref_i))
  dino    = mean_i cos(DINO(gen), DINO(ref_i))
  dinov2  = mean_i cos(DINOv2(gen), DINOv2(ref_i))
  scr[t]  = mean_i [cos(DINOv2(gen), DINOv2(ref_i)) < t]   for t in 0.4, 0.5, 0.6

Examples (from the repository root):
  .venv-parity/bin/python tools/parity/paper_eval.py --data /work/shared/datasets/p13n-workshop \\
      --dinov2 tests/fixtures/encoders/dinov2_tiny --dino tests/fixtures/encoders/dino_vits16_tiny \\
      --clip tests/fixtures/encoders/clip_tiny --prompts 01_no_interaction,06_occlusion@43 \\
      --seeds 42 --out /tmp/scores.json
  .venv-parity/bin/python tools/parity/paper_eval.py --make-real-size /tmp/real
"""

import argparse
import json
import math
import platform
import re
import shlex
import shutil
import sys
import time
from pathlib import Path

THRESHOLDS = (0.4, 0.5, 0.6)
SCENES = ("no_interaction", "occlusion", "interaction")
# DESIGN §1: subject names whose normalised form is not a file stem.
ALIASES = {
    "motorcycle": "motor",
    "stuffed bear": "stuff_bear",
    "t-shirt": "tshirt",
    "black woman": "black_women",
    "black man": "blackman",
}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


# ----------------------------------------------------------------------------------------- dataset


def normalise(name: str) -> str:
    words = [w for w in re.split(r"[\s_]+", name.lower()) if w not in ("a", "an", "the")]
    return re.sub(r"[^a-z0-9]", "", "".join(words))


def reference_index(val_dir: Path) -> dict:
    index = {}
    for p in sorted(val_dir.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES:
            key = normalise(p.stem)
            if key in index:
                sys.exit(f"error: two reference images normalise to {key!r}: {index[key]} and {p}")
            index[key] = p
    return index


def resolve_subject(name: str, index: dict) -> Path:
    key = normalise(ALIASES.get(name.strip().lower(), name))
    if key not in index:
        sys.exit(f"error: no reference image for subject {name!r} (key {key!r})")
    return index[key]


def parse_prompts(path: Path, index: dict) -> list:
    """prompts_50.txt -> [{prompt_id, number, level, scene, prompt, subjects: [(name, path)]}]."""
    lines = path.read_text(encoding="utf-8").splitlines()
    entry = re.compile(r"^#(\d+)\s+\[(.*)\]\s*$")
    out = []
    i = 0
    while i < len(lines):
        m = entry.match(lines[i].strip())
        i += 1
        if not m:
            continue
        number = int(m.group(1))
        names = [s.strip() for s in m.group(2).split("\u00b7") if s.strip()]
        while i < len(lines) and not lines[i].strip():
            i += 1
        if i >= len(lines):
            sys.exit(f"error: prompt #{number:02d} has no text")
        text = lines[i].strip()
        i += 1
        level = 2 * ((number - 1) // 15 + 1)
        scene = SCENES[((number - 1) % 15) // 5]
        if len(names) != level:
            sys.exit(f"error: prompt #{number:02d} lists {len(names)} subjects, level says {level}")
        out.append({
            "prompt_id": f"{number:02d}_{scene}",
            "number": number,
            "level": level,
            "scene": scene,
            "prompt": text,
            "subjects": [(n, resolve_subject(n, index)) for n in names],
        })
    if len(out) != 75 or [p["number"] for p in out] != list(range(1, 76)):
        sys.exit(f"error: expected prompts #01..#75 in {path}, found {len(out)}")
    return out


def check_meta(prompt: dict, seed: int, folder: Path) -> None:
    """Cross-check prompt text and subject names against meta.json (paths in it are ignored)."""
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        return
    data = json.loads(meta_path.read_text(encoding="utf-8"))
    data = [data] if isinstance(data, dict) else data
    recs = [r for r in data if r.get("seed") == seed]
    if not recs:
        return
    rec = recs[0]
    names = [s.get("name") for s in rec.get("subjects") or []]
    if rec.get("prompt") != prompt["prompt"] or names != [n for n, _ in prompt["subjects"]]:
        sys.exit(
            f"error: {meta_path} (seed {seed}) disagrees with prompts_50.txt:\n"
            f"  meta:    {rec.get('prompt')!r} {names}\n"
            f"  prompts: {prompt['prompt']!r} {[n for n, _ in prompt['subjects']]}"
        )


def select(prompts: list, spec: str, seeds: list, limit: int) -> list:
    """[(prompt, seed)]; spec items are PROMPT_ID or PROMPT_ID@SEED (the latter ignores --seeds)."""
    by_id = {p["prompt_id"]: p for p in prompts}
    jobs = []
    if spec:
        for item in [s.strip() for s in spec.split(",") if s.strip()]:
            pid, _, seed = item.partition("@")
            if pid not in by_id:
                sys.exit(f"error: unknown prompt id {pid!r}")
            for s in ([int(seed)] if seed else seeds):
                jobs.append((by_id[pid], s))
    else:
        jobs = [(p, s) for p in prompts for s in seeds]
    return jobs[:limit] if limit else jobs


# ---------------------------------------------------------------------------------------- encoders


def hub_interpolation(embeddings, height: int, width: int):
    """torch-hub DINOv2 interpolate_pos_encoding (interpolate_offset=0.1, antialias=False)."""
    import torch
    import torch.nn.functional as F

    pos = embeddings.position_embeddings
    patch_size = embeddings.patch_size
    num_patches = (height // patch_size) * (width // patch_size)
    num_positions = pos.shape[1] - 1
    if num_patches == num_positions and height == width:
        return pos
    dtype = pos.dtype
    cls, patch = pos[:, :1], pos[:, 1:].float()
    dim = pos.shape[-1]
    m = int(math.sqrt(num_positions))
    assert m * m == num_positions
    h0, w0 = height // patch_size, width // patch_size
    patch = F.interpolate(
        patch.reshape(1, m, m, dim).permute(0, 3, 1, 2),
        scale_factor=((h0 + 0.1) / m, (w0 + 0.1) / m),
        mode="bicubic",
        antialias=False,
    )
    assert patch.shape[-2:] == (h0, w0), patch.shape
    patch = patch.to(dtype).permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((cls, patch), dim=1)


class Encoders:
    def __init__(self, dinov2_dir: str, dino_dir: str, clip_dir: str):
        import torch
        import torchvision.transforms as T
        from transformers import AutoTokenizer, CLIPModel, Dinov2Model, ViTModel
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        for label, d in (("--dinov2", dinov2_dir), ("--dino", dino_dir), ("--clip", clip_dir)):
            if not (Path(d) / "config.json").is_file():
                sys.exit(f"error: {label} {d}: no config.json")
        self.torch = torch
        # Loading failures raise: no fallback (the paper's script silently fell back to CLIP for SCR).
        self.dinov2 = Dinov2Model.from_pretrained(dinov2_dir).eval()
        emb = self.dinov2.embeddings
        emb.interpolate_pos_encoding = lambda e, h, w, emb=emb: hub_interpolation(emb, h, w)
        self.dino = ViTModel.from_pretrained(dino_dir, add_pooling_layer=False).eval()
        cfg = self.dino.config
        if cfg.image_size != 224 or (224 // cfg.patch_size) ** 2 != self.dino.embeddings.position_embeddings.shape[1] - 1:
            sys.exit(
                f"error: --dino {dino_dir}: needs a 224 px position table (image_size={cfg.image_size}, "
                f"patch={cfg.patch_size}); torch-hub dino_vits16 does not interpolate at 224 px"
            )
        self.clip = CLIPModel.from_pretrained(clip_dir).eval()
        if (Path(clip_dir) / "preprocessor_config.json").is_file():
            self.clip_proc = CLIPImageProcessorPil.from_pretrained(clip_dir)
        else:  # defaults == openai/clip-vit-large-patch14's preprocessor_config.json
            self.clip_proc = CLIPImageProcessorPil()
        self.tokenizer = AutoTokenizer.from_pretrained(clip_dir)
        self.dino_tf = T.Compose([
            T.Resize(256, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ])

    @staticmethod
    def _norm(x):
        return x / x.norm(dim=-1, keepdim=True)

    @staticmethod
    def _features(out):
        return out if hasattr(out, "dim") else out.pooler_output

    def clip_image(self, img):
        px = self.clip_proc(images=img, return_tensors="pt")["pixel_values"]
        return self._norm(self._features(self.clip.get_image_features(pixel_values=px)))

    def clip_text(self, text: str):
        tok = self.tokenizer([text], return_tensors="pt", padding=True, truncation=True, max_length=77)
        out = self.clip.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        return self._norm(self._features(out))

    def dinov2_image(self, img):
        return self._norm(self.dinov2(pixel_values=self.dino_tf(img).unsqueeze(0)).pooler_output)

    def dino_image(self, img):
        return self._norm(self.dino(pixel_values=self.dino_tf(img).unsqueeze(0)).last_hidden_state[:, 0])


def load_rgb(path: Path):
    from PIL import Image

    if not path.is_file():
        sys.exit(f"error: image not found: {path}")
    with Image.open(path) as im:
        return im.convert("RGB")


def cosine(a, b) -> float:
    return float((a * b).sum(dim=-1).mean().item())


def evaluate(enc: Encoders, prompt: dict, seed: int, image: Path) -> dict:
    gen = load_rgb(image)
    with enc.torch.inference_mode():
        g_clip = enc.clip_image(gen)
        clip_t = cosine(g_clip, enc.clip_text(prompt["prompt"]))
        g_dino = enc.dino_image(gen)
        g_dinov2 = enc.dinov2_image(gen)
        subjects = []
        for name, ref_path in prompt["subjects"]:  # re-embedded for every image, as in eval.py
            ref = load_rgb(ref_path)
            subjects.append({
                "name": name,
                "clip_i": cosine(g_clip, enc.clip_image(ref)),
                "dino": cosine(g_dino, enc.dino_image(ref)),
                "dinov2": cosine(g_dinov2, enc.dinov2_image(ref)),
            })
    n = len(subjects)

    def mean(key):
        return float(sum(s[key] for s in subjects) / n)

    return {
        "prompt_id": prompt["prompt_id"],
        "seed": seed,
        "subject_count": n,
        "clip_t": clip_t,
        "clip_i": mean("clip_i"),
        "dino": mean("dino"),
        "dinov2": mean("dinov2"),
        "scr": {str(t): sum(1 for s in subjects if s["dinov2"] < t) / n for t in THRESHOLDS},
        "subjects": subjects,
    }


def versions() -> dict:
    import PIL
    import torch
    import torchvision
    import transformers

    try:
        from PIL import features

        turbo = features.check_feature("libjpeg_turbo")
        jpeg = features.version("jpg")
    except Exception:  # pragma: no cover
        turbo, jpeg = None, None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "transformers": transformers.__version__,
        "pillow": PIL.__version__,
        "libjpeg": jpeg,
        "libjpeg_turbo": turbo,
        "paper_eval_py": "ZHIHANCHEN03/Multi-Subject-Personalization-Evaluation-P13N-Workshop-@012ae6dbc1ad7cb39dbda75c2ec5da8cb1a1b92e:scripts/eval.py",
    }


# ------------------------------------------------------------------------------ real-size checkpoints


def make_real_size(root: Path) -> None:
    """Random-weight checkpoints with the real shapes, for the speed comparison (no hub access).

    dinov2_small: facebook/dinov2-small (reuses bench_transformers.py's `dinov2-s14` config and its
    O(1) layer scales); dino_vits16: facebook/dino-vits16 (ViTModel without pooler);
    clip_vit_large_patch14: openai/clip-vit-large-patch14, both towers at full size. The CLIP
    directory gets the tiny fixture tokenizer (its ids fit in the 49408 vocabulary; the text length
    differs from the real BPE, which only matters for timing at the margin).
    """
    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_transformers

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)

    def save(model, name):
        d = root / name
        if (d / "config.json").exists():
            print(f"{d}: exists, kept")
            return d
        model.eval().save_pretrained(d, safe_serialization=True)
        print(f"{d}: written")
        return d

    if not (root / "dinov2_small" / "config.json").exists():
        bench_transformers.create(argparse.Namespace(model="dinov2-s14", dir=str(root / "dinov2_small")))
        print(f"{root / 'dinov2_small'}: written")
    if not (root / "dino_vits16" / "config.json").exists():
        save(transformers.ViTModel(transformers.ViTConfig(
            hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
            image_size=224, patch_size=16, hidden_act="gelu", qkv_bias=True,
        ), add_pooling_layer=False), "dino_vits16")
    clip_dir = root / "clip_vit_large_patch14"
    if not (clip_dir / "config.json").exists():
        save(transformers.CLIPModel(transformers.CLIPConfig(
            text_config=dict(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                bos_token_id=0, pad_token_id=1, eos_token_id=2,
            ),
            vision_config=dict(
                hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=14, hidden_act="quick_gelu",
            ),
            projection_dim=768,
        )), "clip_vit_large_patch14")
        tiny = Path(__file__).resolve().parents[2] / "tests/fixtures/encoders/clip_tiny"
        for f in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(tiny / f, clip_dir / f)


# ------------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="/work/shared/datasets/p13n-workshop")
    p.add_argument("--model", default="mosaic", help="results/<model>/ folder (default mosaic)")
    p.add_argument("--dinov2", help="HF Dinov2Model directory")
    p.add_argument("--dino", help="HF ViTModel directory (DINO v1, ViT-S/16 at 224 px)")
    p.add_argument("--clip", help="HF CLIPModel directory with a tokenizer")
    p.add_argument("--prompts", default="", help="comma list of PROMPT_ID or PROMPT_ID@SEED (default all)")
    p.add_argument("--seeds", default="42,43,44")
    p.add_argument("--limit", type=int, default=0, help="evaluate at most N images")
    p.add_argument("--out", help="write the records (JSON list) here")
    p.add_argument("--provenance", action="store_true",
                   help="write {command, versions, records} instead of a bare list")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--make-real-size", metavar="DIR",
                   help="write random real-size dinov2_small / dino_vits16 / clip_vit_large_patch14 and exit")
    args = p.parse_args()

    if args.make_real_size:
        make_real_size(Path(args.make_real_size))
        return
    for flag in ("dinov2", "dino", "clip", "out"):
        if not getattr(args, flag):
            p.error(f"--{flag} is required")

    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    index = reference_index(data / "val_dataset")
    prompts = parse_prompts(data / "val_dataset" / "prompts_50.txt", index)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    jobs = select(prompts, args.prompts, seeds, args.limit)
    if not jobs:
        sys.exit("error: nothing to evaluate")
    enc = Encoders(args.dinov2, args.dino, args.clip)
    t_loaded = time.perf_counter()

    records = []
    for prompt, seed in jobs:
        folder = data / "results" / args.model / prompt["prompt_id"]
        check_meta(prompt, seed, folder)
        records.append(evaluate(enc, prompt, seed, folder / f"{seed}.png"))
    t_done = time.perf_counter()

    payload = records
    if args.provenance:
        argv = [a.replace(str(Path.cwd()) + "/", "") for a in sys.argv]
        payload = {
            "command": " ".join(shlex.quote(a) for a in [".venv-parity/bin/python", *argv]),
            "versions": versions(),
            "threads": args.threads,
            "records": records,
        }
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    refs = sum(r["subject_count"] for r in records)
    print(
        f"{len(records)} images ({refs} reference embeddings per encoder) on {torch.get_num_threads()} threads: "
        f"wall {t_done - t0:.2f} s (load {t_loaded - t0:.2f} s, eval {t_done - t_loaded:.2f} s, "
        f"{(t_done - t_loaded) / len(records):.3f} s/image) -> {args.out}"
    )


if __name__ == "__main__":
    main()
