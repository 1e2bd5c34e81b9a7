"""The xverse adapter: the official XVerse single-sample inference, in-process, model loaded once.

It imports the official `inference_single_sample.py` from its clone (`cargo xtask adapter setup
xverse` puts it in <cache>/adapters/xverse/src, beside the venv; `--repo DIR` or env
SCRBENCH_XVERSE_SRC point elsewhere), builds the model as its `main()` does, once, and answers each
request with its `generate_image(...)`, asking for one image (no grid):

    captions, idip flags and image paths from the request (references in subject order), the
    prompt with ENT1..ENTn (generate_image replaces ENTi by caption i), seed, target size, steps;
    control_weight_lambda "0-1:1/<weight_id>/<weight_ip>", vae_skip_iter "0-<s1>:1,<s2>-1:1",
    latent LoRA scale "0-1:<s>", VAE LoRA scale "0-1:<s>", cond_size, int8-quanto DiT.

Defaults are the paper's and XVerse's README's: cond_size 256, weight_id 3, weight_ip 5,
latent_lora_scale 0.85, vae_lora_scale 1.3, vae_skip_iter 0.05/0.8, 28 steps, 768x768. Guidance is
3.5, fixed inside XVerse's code (a request's other value is refused). Weights come from the Hugging
Face cache (FLUX.1-dev at the manifest's revision, ByteDance/XVerse, openai/clip-vit-large-patch14),
passed through XVerse's own FLUX_MODEL_PATH and CLIP_MODEL_PATH.

The official script imports gradio and two evaluation modules (face ID, Florence-SAM) that its
inference never calls; the worker stands in empty modules for them, so their heavy dependencies
need not be installed.

Smoke mode (`--smoke`): the same calls on tiny random checkpoints written to a temporary folder in
the official layouts (a FLUX with 16 latent channels and 19 double blocks, as XVerse's code
hard-codes, a CLIP vision tower and processor, a modulation adapter, a DiT LoRA), on CPU.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scrbench_worker import Worker, log, main  # noqa: E402

UNUSED_MODULES = {
    "gradio": {},
    "eval": {}, "eval.tools": {},
    "eval.tools.face_id": {"FaceID": None},
    "eval.tools.florence_sam": {"ObjectDetector": None},
}


def official_source(explicit: str | None) -> Path:
    """The official repository: --repo, $SCRBENCH_XVERSE_SRC, or `src` beside the venv."""
    candidates = [explicit, os.environ.get("SCRBENCH_XVERSE_SRC"), str(Path(sys.prefix).parent / "src")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "inference_single_sample.py").is_file():
            return Path(candidate).resolve()
    raise RuntimeError(
        "the official XVerse repository is not here (looked for inference_single_sample.py in --repo, "
        f"$SCRBENCH_XVERSE_SRC and {Path(sys.prefix).parent / 'src'}): run "
        "`cargo xtask adapter setup xverse` (add --smoke for smoke mode; --repo-from DIR for a local clone)"
    )


def hub_snapshot(repo: str, revision: str | None) -> str:
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(repo, revision=revision, local_files_only=True)
    except Exception as error:  # noqa: BLE001
        raise RuntimeError(
            f"{repo}@{revision or 'main'} is not in the Hugging Face cache ({type(error).__name__}): "
            "run `cargo xtask adapter setup xverse`"
        ) from error


def clip_bpe_files(folder: Path) -> None:
    """A byte-level BPE vocabulary with no merges, in CLIP's file layout (vocab.json, merges.txt)."""
    ranges = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = ranges[:], 0
    for b in range(256):
        if b not in ranges:
            ranges.append(b)
            codes.append(256 + extra)
            extra += 1
    alphabet = [chr(c) for c in codes]
    vocab = {}
    for token in alphabet + [a + "</w>" for a in alphabet] + ["<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(token, len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")


def build_smoke_checkpoints(root: Path, config: dict) -> tuple[Path, Path, Path]:
    """Tiny random FLUX, CLIP and XVerse checkpoints in the official layouts under `root`."""
    import torch
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizer, CLIPVisionConfig
    from transformers import CLIPVisionModelWithProjection

    from scrbench_tiny_flux import save_tiny_flux, tiny_flux_components
    from src.adapters.mod_adapters import CLIPModAdapter  # the official class

    flux, clip, xverse = root / "flux", root / "clip", root / "XVerse"
    sizes = {"latent_channels": 16, "num_layers": 19}
    save_tiny_flux(flux, **sizes)

    torch.manual_seed(11)
    vision = CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        image_size=224, patch_size=32, projection_dim=16,
    ))
    vision.save_pretrained(clip)
    clip.mkdir(parents=True, exist_ok=True)
    clip_bpe_files(clip)
    tokenizer = CLIPTokenizer(str(clip / "vocab.json"), str(clip / "merges.txt"))
    image_processor = CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(clip)

    transformer = tiny_flux_components(**sizes)["transformer"]
    inner = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    modulation = config["model"]["modulation"]
    torch.manual_seed(12)
    adapter = CLIPModAdapter(
        out_dim=inner, width=32, pblock_width=32, layers=1, pblock_layers=1, heads=2,
        input_text_dim=32, input_image_dim=32,
        pblock_single_blocks=modulation["per_block_adapter_single_blocks"],
    )
    # main() passes <ckpt_root>/modulation_adapter and the loader adds subfolder="modulation_adapter".
    adapter.save_pretrained(xverse / "modulation_adapter" / "modulation_adapter")

    lora = dict(config["model"]["dit_lora_config"], r=4, lora_alpha=4, init_lora_weights=False)
    torch.manual_seed(13)
    transformer.add_adapter(LoraConfig(**lora))
    FluxPipeline.save_lora_weights(str(xverse), transformer_lora_layers=get_peft_model_state_dict(transformer),
                                   weight_name="pytorch_lora_weights.safetensors")
    return flux, clip, xverse


class XVerseWorker(Worker):
    """XVerse, official code."""

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--repo", default=None, help="the official repository's clone")
        parser.add_argument("--cond-size", type=int, default=256)
        parser.add_argument("--weight-id", type=float, default=3)
        parser.add_argument("--weight-ip", type=float, default=5)
        parser.add_argument("--latent-lora-scale", type=float, default=0.85)
        parser.add_argument("--vae-lora-scale", type=float, default=1.3)
        parser.add_argument("--vae-skip-iter-s1", type=float, default=0.05)
        parser.add_argument("--vae-skip-iter-s2", type=float, default=0.8)
        parser.add_argument("--dit-quant", default="int8-quanto")

    def load(self):
        import torch

        from scrbench_torch import describe_device, pick_device

        source = official_source(self.args.repo)
        os.chdir(source)  # the official code reads its config by a relative path
        sys.path.insert(0, str(source))
        for name, attributes in UNUSED_MODULES.items():
            if name not in sys.modules:
                module = types.ModuleType(name)
                module.__dict__.update(attributes)
                module.__path__ = []  # a package, so the submodules resolve
                sys.modules[name] = module
        import inference_single_sample as official  # the official script, as a module
        from src.flux.generate import seed_everything

        self.torch, self.official, self.seed_everything = torch, official, seed_everything
        device = pick_device(self.args.device, self.smoke)
        dtype = torch.bfloat16
        model = dict(self.manifest.get("model") or {})
        config = official.get_train_config(official.config_path)
        if self.smoke:
            from scrbench_tiny_flux import TINY_FLUX_VERSION

            self._smoke_dir = tempfile.TemporaryDirectory(prefix="xverse-smoke-")
            flux, clip, ckpt_root = build_smoke_checkpoints(Path(self._smoke_dir.name), config)
            model = {"id": "tiny random FLUX + CLIP + XVerse (smoke)", "revision": TINY_FLUX_VERSION}
        else:
            flux = hub_snapshot(model["id"], model.get("revision"))
            clip = hub_snapshot(model.get("clip", "openai/clip-vit-large-patch14"), None)
            ckpt_root = hub_snapshot(model.get("xverse", "ByteDance/XVerse"), model.get("xverse_revision"))
        os.environ["FLUX_MODEL_PATH"] = str(flux)
        os.environ["CLIP_MODEL_PATH"] = str(clip)

        # As the official main(): the pipeline without the DiT LoRA, then the demo config again,
        # the modulation adapter, then the DiT LoRA.
        config["model"]["dit_quant"] = self.args.dit_quant
        config["model"]["use_dit_lora"] = False
        xverse = official.CustomFluxPipeline(config, torch.device(device), torch_dtype=dtype)
        xverse.pipe.set_progress_bar_config(disable=True)
        if getattr(xverse.pipe, "clip_model", None) is None:
            raise RuntimeError(f"XVerse could not load the CLIP model from {clip} (see the log above)")
        config = official.get_train_config(official.config_path)
        if self.smoke:
            # The demo config's widths are FLUX.1-dev's (out_dim 3072): the tiny transformer's here.
            transformer = xverse.pipe.transformer.config
            config["model"]["modulation"]["out_dim"] = transformer.num_attention_heads * transformer.attention_head_dim
        xverse.config = config
        xverse.clear_modulation_adapters()
        xverse.pipe.unload_lora_weights()
        adapter = official.load_modulation_adapter(
            xverse, config, dtype, torch.device(device), f"{ckpt_root}/modulation_adapter", is_training=False
        )
        xverse.add_modulation_adapter(adapter)
        if config["model"]["use_dit_lora"]:
            official.load_dit_lora(xverse, xverse.pipe, config, dtype, torch.device(device), f"{ckpt_root}",
                                   is_training=False)
        xverse.pipe = xverse.pipe.to(device)
        for i in range(len(xverse.pipe.modulation_adapters)):
            xverse.pipe.modulation_adapters[i] = xverse.pipe.modulation_adapters[i].to(device)
        self.xverse, self.torch_device = xverse, device
        self.device = describe_device(device)
        model["code"] = str(source)
        return model

    def generate(self, request):
        from scrbench_torch import check_references, save_png

        if abs(float(request["guidance"]) - 3.5) > 1e-9:
            raise ValueError(f"XVerse's guidance is fixed at 3.5 in its code; asked {request['guidance']}")
        args = self.args
        references = request.get("references") or []
        images = [str(p) for p in check_references(request)]
        captions = [r.get("caption") or r["name"] for r in references]
        idips = [bool(r.get("idip")) for r in references]
        cond_size = args.cond_size if not self.smoke else min(args.cond_size, 32)
        steps = int(request["steps"])
        seed = int(request["seed"])
        # Encoding the references samples from the global RNG: seed it per request (official helper).
        self.seed_everything(seed)
        self.progress(0, steps)
        image = self.official.generate_image(
            self.xverse,
            request["prompt"],
            cond_size,
            int(request["height"]),
            int(request["width"]),
            seed,
            f"0-{args.vae_skip_iter_s1}:1,{args.vae_skip_iter_s2}-1:1",
            f"0-1:1/{args.weight_id}/{args.weight_ip}",
            args.latent_lora_scale,  # as main() passes it
            f"0-1:{args.latent_lora_scale}",
            f"0-1:{args.vae_lora_scale}",
            list(range(len(images))),
            1,  # one image: no grid
            self.torch.device(self.torch_device),
            None,
            steps,
            *images,
            *captions,
            *idips,
        )
        save_png(image, request)
        log(f"{request['id']}: captions {captions}, idips {idips}")
        return {"device": self.device, "idips": idips}


if __name__ == "__main__":
    main(XVerseWorker)
