//! Image loading and preprocessing, bit-exact with the Python reference the paper used.
//!
//! The metric models see tensors produced by PIL + torchvision (DINOv2, DINO v1) and by
//! transformers' `CLIPImageProcessor` (CLIP). Small differences in resampling or rounding move
//! embeddings, so this crate reproduces those pipelines exactly rather than approximately.
//!
//! # Pipeline
//! 1. Loading, [`open_rgb`]: `PIL.Image.open(path).convert("RGB")`.
//! 2. Resize and crop, [`Preprocessor::crop_u8`]: shorter-side resize with PIL's antialiased bicubic
//!    ([`resize_bicubic`]), then center crop, as 8-bit RGB.
//! 3. Tensor, [`Preprocessor::process`]: `/255` and mean/std normalisation to CHW `f32`.
//!
//! Two pipelines are provided: [`Preprocessor::dino_paper`] (torchvision `Resize(256, BICUBIC)` →
//! `CenterCrop(224)` → `ToTensor` → `Normalize(ImageNet)`) and [`Preprocessor::clip`]
//! (transformers' PIL backend `CLIPImageProcessorPil`, i.e. the slow `CLIPImageProcessor`:
//! shortest edge 224 → crop 224 → rescale → `Normalize(CLIP)`). Which CLIP backend (PIL or the
//! torchvision "fast" processor) the paper's transformers used is unknown; we follow the slow PIL
//! path, whose resize is the same PIL bicubic as the DINO pipeline. The two pipelines also round
//! the crop offset differently: torchvision `int(round((h − c)/2))` (half to even), transformers
//! `(h − c) // 2`.
//!
//! # Decoding rules (PIL `convert("RGB")`)
//! - RGB: as stored. RGBA, LA: alpha dropped, the colour under transparent pixels kept as stored
//!   (not composited). L: gray replicated. 1/2/4-bit gray: scaled to 0..255.
//! - P (palette, any bit depth, with or without `tRNS`): palette lookup, transparency ignored.
//! - 16-bit gray (PIL `I;16`): clipped, `v > 255 → 255` (PIL's `I;16 → RGB`; not scaled!).
//! - 16-bit RGB / RGBA / gray+alpha: the most significant byte (PIL's `;16B` unpackers truncate).
//! - JPEG: decoded by libjpeg itself (libjpeg-turbo's code base in MozJPEG's fork, the
//!   `mozjpeg-sys` crate, portable C without SIMD), set up as PIL's `JpegDecode.c` sets it up
//!   without `draft()`: integer "islow" IDCT, fancy (triangular) chroma upsampling, no scaling,
//!   libjpeg's colour-space guess from the JFIF/Adobe markers and its own YCbCr→RGB tables.
//!   1 component: L, replicated. 3: libjpeg's RGB output. 4 (CMYK, and YCCK converted to CMYK by
//!   libjpeg): Adobe (inverted) polarity as PIL assumes, then PIL's `cmyk2rgb`
//!   ([`cmyk_to_rgb`]). Other component counts are errors, as in PIL. Recoverable corrupt-data
//!   warnings are ignored as PIL ignores them; data ending early is an error, as PIL's
//!   "image file is truncated".
//! - EXIF orientation, ICC profiles and PNG gamma are ignored, as `Image.open` ignores them.
//! - Only PNG and JPEG are supported (sniffed from the content); anything else is an error.
//!
//! # What is exact and what was measured
//! Against Pillow 13.0.0, torchvision 0.24.1 and transformers 5.24.0
//! (`tools/parity/make_preprocess_fixtures.py`, fixtures in `tests/fixtures/preprocess/`):
//! - PNG decoding of every mode above: bit-exact (max |diff| 0), also on the paper's one PNG
//!   reference (`bowl.png`, RGBA 540×540).
//! - PIL bicubic resize (down- and upsampling, one- and two-pass cases, 5×3 to 1600×1200):
//!   bit-exact; center crops bit-exact for both pipelines.
//! - Float tensors: bit-exact (max |diff| 0, the tests allow 1e-6) for all 256 input levels of
//!   each channel in both pipelines, and on every fixture end to end.
//! - JPEG decoding: bit-exact (max |diff| 0) against Pillow 13.0.0's bundled libjpeg-turbo 3.2.0
//!   on all 29 paper reference JPEGs (`val_dataset/*.jpg`, baseline 4:2:0, 313×316 to
//!   1280×1280), checked on every test run against committed sha256 digests of PIL's decoded
//!   bytes (`tests/fixtures/preprocess/paper_decodes.json`), and on the JPEG fixtures
//!   (`photo_jpeg` 4:2:0 with saturated sharp colour edges, `cmyk` 4:4:4 Adobe CMYK). Also
//!   measured bit-exact, not committed: 4:4:4 / 4:2:2 / 4:2:0 baseline and progressive, quality
//!   20 (optimised Huffman) and 100, odd sizes (333×217, 217×333), gray baseline and
//!   progressive, progressive CMYK. (The previous pure-Rust decoder, `zune-jpeg`, differed by up
//!   to 5 levels on 5.5 % of the paper JPEGs' channel values.)
//!   The paper-digest test also covers the one PNG reference. Arithmetic-coded JPEGs are
//!   decoded too (libjpeg's `jdarith.c`, as in PIL's build) but were not measured.
//! - Not handled like PIL: formats other than PNG/JPEG, APNG frames after the first (PIL also
//!   shows the first), PNG palettes shorter than the indices used (decoder-defined), JPEGs that
//!   are missing only bytes after the last scan (PIL may still call them truncated).

mod jpeg;
mod load;
mod resize;
mod transform;

use std::path::PathBuf;

pub use image::RgbImage;
pub use load::{Format, cmyk_to_rgb, decode_rgb, open_rgb};
pub use resize::resize_bicubic;
pub use transform::{
    CLIP_MEAN, CLIP_STD, CropOrigin, Flavor, IMAGENET_MEAN, IMAGENET_STD, PreprocessParams,
    Preprocessor, center_crop,
};

/// Errors from loading images. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read image {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The content is neither PNG nor JPEG.
    #[error("unsupported image format in {path} (only PNG and JPEG are supported)")]
    UnsupportedFormat {
        /// The file.
        path: PathBuf,
    },
    /// The decoder rejected the file.
    #[error("cannot decode image {path}: {reason}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's message.
        reason: String,
    },
}
