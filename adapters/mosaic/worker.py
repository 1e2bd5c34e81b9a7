"""The mosaic adapter: the official MOSAIC inference, in-process, model loaded once.

It imports the official code from its clone (`cargo xtask adapter setup mosaic` puts it in
<cache>/adapters/mosaic/src, beside the venv; `--repo DIR` or env SCRBENCH_MOSAIC_SRC point
elsewhere) and makes the calls of its inference.py for each request:

    pipe = FluxPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", torch_dtype=bfloat16)
    pipe.load_lora_weights("ByteDance-FanQie/MOSAIC", weight_name="subject_512.safetensors",
                           adapter_name="subject"); pipe.set_adapters(["subject"], [1])
    refs = [process_image(path, 512, pad_color=(255, 255, 255), scale=0.9) for each reference]
    conditions = [Condition(ref_i, "subject", [0, -(512 * (i + 1)) // 16]) for i, ref_i]
    generate(pipe, prompt=…, conditions=…, num_inference_steps=28, num_images_per_prompt=1,
             height=512, width=512, guidance_scale=3.5,
             generator=torch.Generator(device).manual_seed(seed))

Differences from inference.py, all deliberate: the seed is the request's (inference.py hard-codes
42), and the global RNG is seeded with it too (the official `seed_everything`), since encoding the
references samples from it: inference.py's images depend on the order it ran them in; a missing reference fails the request (inference.py silently uses a black image); the
reference size is the requested width (512 in a real run, as inference.py; smaller in smoke mode).

Smoke mode (`--smoke`): the same calls on a tiny random FLUX (scrbench_tiny_flux.py) with a
random `subject` LoRA saved to a temporary file and loaded through `load_lora_weights`, on CPU.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scrbench_worker import Worker, log, main  # noqa: E402

LORA_TARGETS = [
    "x_embedder", "norm1.linear", "attn.to_q", "attn.to_k", "attn.to_v", "attn.to_out.0",
    "ff.net.2", "norm.linear", "proj_mlp", "proj_out",
]


def official_source(explicit: str | None) -> Path:
    """The official repository: --repo, $SCRBENCH_MOSAIC_SRC, or `src` beside the venv."""
    candidates = [explicit, os.environ.get("SCRBENCH_MOSAIC_SRC"), str(Path(sys.prefix).parent / "src")]
    for candidate in candidates:
        if candidate and (Path(candidate) / "src" / "flux_omini.py").is_file():
            return Path(candidate).resolve()
    raise RuntimeError(
        "the official MOSAIC repository is not here (looked for src/flux_omini.py in --repo, "
        f"$SCRBENCH_MOSAIC_SRC and {Path(sys.prefix).parent / 'src'}): run "
        "`cargo xtask adapter setup mosaic` (add --smoke for smoke mode; --repo-from DIR for a local clone)"
    )


def smoke_lora(pipe, folder: Path) -> Path:
    """A random LoRA on the tiny transformer, saved as MOSAIC's file name in diffusers' format."""
    import torch
    from diffusers import FluxPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    from scrbench_tiny_flux import tiny_flux_components

    donor = tiny_flux_components()["transformer"]
    torch.manual_seed(1234)
    donor.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=LORA_TARGETS, init_lora_weights=False))
    state = get_peft_model_state_dict(donor)
    FluxPipeline.save_lora_weights(str(folder), transformer_lora_layers=state,
                                   weight_name="subject_512.safetensors")
    return folder


class MosaicWorker(Worker):
    """MOSAIC, official code."""

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument("--repo", default=None, help="the official repository's clone")

    def load(self):
        import torch
        from diffusers import FluxPipeline

        from scrbench_torch import describe_device, pick_device

        source = official_source(self.args.repo)
        sys.path.insert(0, str(source))
        from src.flux_omini import Condition, generate, seed_everything  # the official code
        from utils import process_image

        self.torch, self.Condition, self.official_generate = torch, Condition, generate
        self.seed_everything = seed_everything
        self.process_image = process_image
        device = pick_device(self.args.device, self.smoke)
        model = dict(self.manifest.get("model") or {})
        if self.smoke:
            from scrbench_tiny_flux import TINY_FLUX_VERSION, tiny_flux_pipeline

            pipe = tiny_flux_pipeline()
            self._lora_dir = tempfile.TemporaryDirectory(prefix="mosaic-smoke-lora-")
            lora_repo = str(smoke_lora(pipe, Path(self._lora_dir.name)))
            lora_revision = None
            model = {"id": "tiny random FLUX + random subject LoRA (smoke)", "revision": TINY_FLUX_VERSION}
        else:
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            pipe = FluxPipeline.from_pretrained(model["id"], revision=model.get("revision"), torch_dtype=dtype)
            lora_repo = "ByteDance-FanQie/MOSAIC"
            lora_revision = model.get("lora_revision")
        pipe = pipe.to(device)
        kwargs = {"revision": lora_revision} if lora_revision else {}
        pipe.load_lora_weights(lora_repo, weight_name="subject_512.safetensors", adapter_name="subject", **kwargs)
        pipe.set_adapters(["subject"], [1])
        pipe.set_progress_bar_config(disable=True)
        self.pipe, self.torch_device = pipe, device
        self.device = describe_device(device)
        model["code"] = f"{source} ({_head(source)})"
        return model

    def generate(self, request):
        from scrbench_torch import check_references, save_png, step_callback

        width, height = int(request["width"]), int(request["height"])
        ref_size = width
        references = [
            self.process_image(str(path), target_size=ref_size, pad_color=(255, 255, 255), scale=0.9)
            for path in check_references(request)
        ]
        conditions = [
            self.Condition(image, "subject", [0, -(ref_size * (i + 1)) // 16])
            for i, image in enumerate(references)
        ]
        steps = int(request["steps"])
        # The conditions' VAE encoding samples from the global RNG (latent_dist.sample()): seed it
        # per request, with the official helper, so an image depends on its request alone.
        self.seed_everything(int(request["seed"]))
        with self.torch.no_grad():
            result = self.official_generate(
                self.pipe,
                prompt=request["prompt"],
                conditions=conditions,
                num_inference_steps=steps,
                num_images_per_prompt=1,
                height=height,
                width=width,
                guidance_scale=float(request["guidance"]),
                generator=self.torch.Generator(self.torch_device).manual_seed(int(request["seed"])),
                callback_on_step_end=step_callback(self, steps),
            )[0]
        if len(result) == 0:
            raise RuntimeError("MOSAIC's generate returned no image")
        save_png(result[0], request)
        log(f"{request['id']}: {len(references)} references")
        return {"device": self.device, "references": len(references)}


def _head(source: Path) -> str:
    head = source / ".git" / "HEAD"
    try:
        text = head.read_text().strip()
        if text.startswith("ref: "):
            return (source / ".git" / text[5:]).read_text().strip()[:12]
        return text[:12]
    except OSError:
        return "not a git checkout"


if __name__ == "__main__":
    main(MosaicWorker)
