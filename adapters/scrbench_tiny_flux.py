"""Tiny, randomly initialised FLUX.1 components for smoke mode (no weights, no network, CPU).

Same classes and wiring as FLUX.1-dev (FluxTransformer2DModel with guidance embeddings, a 4-level
AutoencoderKL, CLIPTextModel + T5EncoderModel, FlowMatchEulerDiscreteScheduler with FLUX's
shift settings), with tiny widths so a 64x64 image takes well under a second. Tokenizers are
built locally with the `tokenizers` library (a word-level vocabulary; unknown words map to
<unk>), since the real ones cannot be downloaded here.

Deterministic: the same `seed` gives the same weights with any torch version on a given machine,
so a smoke image depends only on the request (prompt, seed, size, steps, guidance).

    from scrbench_tiny_flux import tiny_flux_pipeline
    pipe = tiny_flux_pipeline()            # a diffusers.FluxPipeline, float32, on CPU
    save_tiny_flux("/tmp/tiny-flux")       # or a folder FluxPipeline.from_pretrained() loads
"""

from __future__ import annotations

import torch

#: Part of a smoke model's identity: bump when the tiny configuration changes.
TINY_FLUX_VERSION = "tiny-flux-1"

WORDS = (
    "a an the and of on in at with near beside behind next to under over while its their his her "
    "photo picture scene sofa table room park street plaza beach kitchen garden fountain phone "
    "cat dog bear teapot camera bowl vase hat backpack guitar clock handbag car bike motorcycle "
    "woman man girl boy person people old young asian western black white red blue green "
    "sits stands holds holding reading walking sitting standing playing looking riding "
    "subjects ent1 ent2 ent3 ent4 ent5 ent6 ent7 ent8 ent9 ent10"
).split()


def _word_tokenizer(specials: list[str], unk: str, model_max_length: int, **special_tokens):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(specials)}
    for word in WORDS + [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,:;!?'-"):
        vocab.setdefault(word, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=model_max_length, unk_token=unk, **special_tokens
    )


def tiny_tokenizers():
    """(CLIP-like tokenizer, T5-like tokenizer), both `PreTrainedTokenizerFast`."""
    from tokenizers import processors

    clip = _word_tokenizer(
        ["<|startoftext|>", "<|endoftext|>", "<unk>"], "<unk>", 77,
        bos_token="<|startoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    )
    clip.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 0), ("<|endoftext|>", 1)],
    )
    # ids as T5's: 0 <pad>, 1 </s>, 2 <unk>, 3 the word-start piece (XVerse strips a leading 3).
    t5 = _word_tokenizer(["<pad>", "</s>", "<unk>", "\u2581"], "<unk>", 512, eos_token="</s>", pad_token="<pad>")
    t5.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return clip, t5


def tiny_flux_components(seed: int = 0, latent_channels: int = 4, num_layers: int = 1) -> dict:
    """The components of a tiny FluxPipeline, float32, deterministic for `seed`.

    `latent_channels` 16 and `num_layers` 19 give FLUX.1's latent width and double-block count
    (code such as XVerse's hard-codes both), still tiny in every width."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    tokenizer, tokenizer_2 = tiny_tokenizers()
    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=4 * latent_channels, num_layers=num_layers, num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=32,
        guidance_embeds=True, axes_dims_rope=(4, 6, 6),
    )
    torch.manual_seed(seed + 1)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32, hidden_act="quick_gelu",
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    ))
    torch.manual_seed(seed + 2)
    text_encoder_2 = T5EncoderModel(T5Config(
        vocab_size=len(tokenizer_2), d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
        pad_token_id=tokenizer_2.pad_token_id, eos_token_id=tokenizer_2.eos_token_id,
    ))
    torch.manual_seed(seed + 3)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 8, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1, norm_num_groups=4, sample_size=64, use_quant_conv=False,
        use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True, base_shift=0.5,
        max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096,
    )
    for module in (transformer, text_encoder, text_encoder_2, vae):
        module.eval()
    return {
        "scheduler": scheduler, "text_encoder": text_encoder, "text_encoder_2": text_encoder_2,
        "tokenizer": tokenizer, "tokenizer_2": tokenizer_2, "transformer": transformer, "vae": vae,
    }


def tiny_flux_pipeline(seed: int = 0, **sizes):
    """A tiny `diffusers.FluxPipeline` (float32, CPU)."""
    from diffusers import FluxPipeline

    return FluxPipeline(**tiny_flux_components(seed, **sizes))


def save_tiny_flux(path, seed: int = 0, **sizes) -> None:
    """Saves a tiny FLUX in the diffusers layout (`FluxPipeline.from_pretrained(path)` loads it)."""
    tiny_flux_pipeline(seed, **sizes).save_pretrained(str(path), safe_serialization=True)
