"""The psr adapter: FLUX.1-dev from text alone, as the paper ran its "PSR" column.

The paper's runner (PSR-main/psr_infer.py in the paper's repository) loads
`diffusers.FluxPipeline` FLUX.1-dev (bfloat16 on CUDA), appends the subjects' names to the prompt
(". Subjects: a, b." when the prompt has no ENTi placeholders), and calls the pipeline at 768x768,
28 steps, guidance 3.5 with `torch.Generator(device).manual_seed(seed)`. The reference images are
never passed. This worker does the same with the model loaded once.

Smoke mode (`--smoke`): the same calls on a tiny randomly initialised FluxPipeline on CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scrbench_worker import Worker, log, main  # noqa: E402


def paper_prompt(prompt: str, captions: list[str]) -> str:
    """The text psr_infer.py gave FLUX: ENTi replaced by caption i; without any placeholder, the
    captions appended as ". Subjects: a, b." (after the prompt's own final period, as it did)."""
    for i, caption in enumerate(captions, start=1):
        prompt = prompt.replace(f"ENT{i}", caption)
    if captions and not any(f"ENT{i}" in prompt for i in range(1, len(captions) + 1)):
        return f"{prompt}. Subjects: {', '.join(captions)}."
    return prompt


class PsrWorker(Worker):
    """FLUX.1-dev, text only, as run in the paper (not PSR)."""

    @classmethod
    def add_arguments(cls, parser):
        parser.add_argument(
            "--no-subjects-suffix", action="store_true",
            help="send the prompt text alone (the paper appended '. Subjects: a, b.')",
        )

    def load(self):
        import torch
        from diffusers import FluxPipeline

        from scrbench_torch import describe_device, pick_device

        self.torch = torch
        device = pick_device(self.args.device, self.smoke)
        model = dict(self.manifest.get("model") or {})
        if self.smoke:
            from scrbench_tiny_flux import TINY_FLUX_VERSION, tiny_flux_pipeline

            pipe = tiny_flux_pipeline()
            model = {"id": "tiny random FLUX (smoke)", "revision": TINY_FLUX_VERSION}
        else:
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            pipe = FluxPipeline.from_pretrained(
                model["id"], revision=model.get("revision"), torch_dtype=dtype
            )
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.torch_device = device
        self.device = describe_device(device)
        model["subjects_suffix"] = not self.args.no_subjects_suffix
        return model

    def generate(self, request):
        from scrbench_torch import save_png, step_callback

        captions = [r.get("caption") or r["name"] for r in request.get("references") or []]
        prompt = request["prompt"]
        if not self.args.no_subjects_suffix:
            prompt = paper_prompt(prompt, captions)
        steps = int(request["steps"])
        generator = self.torch.Generator(self.torch_device).manual_seed(int(request["seed"]))
        log(f"{request['id']}: {prompt!r}")
        image = self.pipe(
            prompt=prompt,
            height=int(request["height"]),
            width=int(request["width"]),
            num_inference_steps=steps,
            guidance_scale=float(request["guidance"]),
            generator=generator,
            callback_on_step_end=step_callback(self, steps),
        ).images[0]
        save_png(image, request)
        return {"device": self.device, "prompt": prompt}


if __name__ == "__main__":
    main(PsrWorker)
