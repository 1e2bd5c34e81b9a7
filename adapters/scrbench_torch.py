"""Helpers shared by the torch/diffusers adapters (psr, mosaic, xverse): device choice, a
progress callback for diffusers pipelines, and saving the image a request asked for."""

from __future__ import annotations

from pathlib import Path

import torch


def pick_device(requested: str | None, smoke: bool) -> str:
    """`requested` if given; smoke mode runs on CPU; otherwise cuda, which a real run needs."""
    if requested:
        return requested
    if smoke:
        return "cpu"
    if not torch.cuda.is_available():
        raise RuntimeError(
            "no CUDA device visible to torch (a real run needs a GPU; use --smoke to check the "
            "adapter on CPU, or --device cpu to force a very slow CPU run)"
        )
    return "cuda"


def describe_device(device: str) -> str:
    """`cuda:0 (NVIDIA H100 80GB HBM3)`, `cpu (16 threads)`."""
    dev = torch.device(device)
    if dev.type == "cuda":
        index = dev.index if dev.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return f"{dev.type} ({torch.get_num_threads()} threads, torch {torch.__version__})"


def step_callback(worker, steps: int):
    """A diffusers `callback_on_step_end` that reports progress to scrbench."""

    def callback(pipe, step, timestep, kwargs):
        worker.progress(step + 1, steps)
        return kwargs

    return callback


def save_png(image, request: dict) -> None:
    """Writes `image` (PIL) to the request's output as PNG, checking the requested size."""
    width, height = int(request["width"]), int(request["height"])
    if image.size != (width, height):
        raise ValueError(f"the model produced {image.size[0]}x{image.size[1]}, asked {width}x{height}")
    output = Path(request["output"])
    output.parent.mkdir(parents=True, exist_ok=True)
    image.convert("RGB").save(output, format="PNG")


def check_references(request: dict) -> list[Path]:
    """The reference paths of a request, each checked to exist (an unreadable reference fails the
    request with a clear message rather than deep inside the model)."""
    paths = []
    for reference in request.get("references") or []:
        path = Path(reference["path"])
        if not path.is_file():
            raise FileNotFoundError(f"reference {reference.get('name')!r}: no file at {path}")
        paths.append(path)
    return paths
