//! The two preprocessing pipelines: torchvision's (DINO / DINOv2 in the paper) and
//! transformers' slow `CLIPImageProcessor` (CLIP).

use image::RgbImage;
use serde::{Deserialize, Serialize};

use crate::resize::resize_bicubic;

/// ImageNet mean (torchvision `Normalize` in the paper's DINO / DINOv2 preprocessing).
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
/// ImageNet standard deviation.
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];
/// OpenAI CLIP mean (`OPENAI_CLIP_MEAN` in transformers).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
/// OpenAI CLIP standard deviation (`OPENAI_CLIP_STD`), digits as in transformers.
#[allow(clippy::excessive_precision)]
pub const CLIP_STD: [f32; 3] = [0.268_629_54, 0.261_302_58, 0.275_777_1];

/// Which reference implementation's rounding rules the pipeline follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flavor {
    /// torchvision `Resize([s], BICUBIC)` on a PIL image → `CenterCrop(c)` → `ToTensor` →
    /// `Normalize`. Crop offset `int(round((h − c) / 2))` (round half to even); a crop larger
    /// than the image pads with 0, `(c − h) // 2` before. Float stage: `(v / 255 − mean) / std`
    /// in `f32`.
    Torchvision,
    /// transformers' PIL backend (`CLIPImageProcessorPil`, the slow `CLIPImageProcessor`):
    /// shortest-edge resize with PIL bicubic, crop offset `(h − c) // 2` (floor; zeros outside),
    /// rescale `f32(v · (1/255 as f64))`, then `(x − mean) / std` in `f32`.
    TransformersPil,
}

/// Everything that determines a [`Preprocessor`]'s output (use it in cache keys).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PreprocessParams {
    /// Rounding / padding conventions and the float formula.
    pub flavor: Flavor,
    /// The shorter side is resized to this (PIL bicubic, antialiased).
    pub resize_shortest: u32,
    /// Square center-crop size (output is `3 × crop × crop`).
    pub crop: u32,
    /// Per-channel mean subtracted after scaling to `[0, 1]`.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by.
    pub std: [f32; 3],
    /// Version of this crate's implementation of the above; bump when outputs change.
    pub implementation: u32,
}

/// A fixed preprocessing pipeline: resize (shorter side), center crop, scale, normalise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocessor {
    params: PreprocessParams,
}

/// Top-left corner of a crop in source coordinates (may be negative: zero padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropOrigin {
    /// Column of the crop's left edge in the resized image.
    pub left: i64,
    /// Row of the crop's top edge in the resized image.
    pub top: i64,
}

const IMPLEMENTATION_VERSION: u32 = 1;

impl Preprocessor {
    /// The paper's DINOv2 / DINO v1 preprocessing: torchvision `Resize(256, BICUBIC)`,
    /// `CenterCrop(224)`, `ToTensor`, `Normalize(ImageNet mean, std)`.
    pub fn dino_paper() -> Self {
        Self::new(PreprocessParams {
            flavor: Flavor::Torchvision,
            resize_shortest: 256,
            crop: 224,
            mean: IMAGENET_MEAN,
            std: IMAGENET_STD,
            implementation: IMPLEMENTATION_VERSION,
        })
    }

    /// `openai/clip-vit-large-patch14`'s `CLIPImageProcessor` on the slow (PIL) path:
    /// shortest edge 224 (bicubic), center crop 224, rescale 1/255, CLIP mean / std.
    pub fn clip() -> Self {
        Self::new(PreprocessParams {
            flavor: Flavor::TransformersPil,
            resize_shortest: 224,
            crop: 224,
            mean: CLIP_MEAN,
            std: CLIP_STD,
            implementation: IMPLEMENTATION_VERSION,
        })
    }

    /// A pipeline with custom parameters (`implementation` is overwritten with this crate's).
    pub fn new(mut params: PreprocessParams) -> Self {
        params.implementation = IMPLEMENTATION_VERSION;
        Self { params }
    }

    /// The parameters (serialisable; everything that affects the output).
    pub fn params(&self) -> &PreprocessParams {
        &self.params
    }

    /// Side of the square output.
    pub fn crop_size(&self) -> u32 {
        self.params.crop
    }

    /// Number of `f32` values [`Preprocessor::process`] returns: `3 · crop · crop`.
    pub fn output_len(&self) -> usize {
        3 * self.params.crop as usize * self.params.crop as usize
    }

    /// The `(width, height)` the shorter side resize produces for a `width × height` input.
    /// Both torchvision's `_compute_resized_output_size` and transformers'
    /// `get_resize_output_image_size` compute `long' = int(s · long / short)` (truncation).
    pub fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        let s = self.params.resize_shortest;
        let (short, long) = if width <= height {
            (width, height)
        } else {
            (height, width)
        };
        if short == 0 {
            return (width, height);
        }
        // Python: `int(s * long / short)`, an exact integer product, then a correctly rounded
        // true division (both operands are exact in f64 for any realistic size).
        let new_long = (f64::from(s) * f64::from(long) / f64::from(short)) as u32;
        if width <= height {
            (s, new_long)
        } else {
            (new_long, s)
        }
    }

    /// Where the crop starts in a `width × height` (already resized) image.
    pub fn crop_origin(&self, width: u32, height: u32) -> CropOrigin {
        let c = i64::from(self.params.crop);
        let axis = |size: u32| -> i64 {
            let size = i64::from(size);
            match self.params.flavor {
                Flavor::Torchvision => {
                    if c > size {
                        // pad (c − size) // 2 before, then the padded image is exactly c.
                        -((c - size) / 2)
                    } else {
                        round_half_even_div2(size - c)
                    }
                }
                Flavor::TransformersPil => (size - c).div_euclid(2),
            }
        };
        CropOrigin {
            left: axis(width),
            top: axis(height),
        }
    }

    /// Resize (shorter side, PIL bicubic) without cropping.
    pub fn resize_u8(&self, img: &RgbImage) -> RgbImage {
        let (w, h) = self.resized_size(img.width(), img.height());
        resize_bicubic(img, w, h)
    }

    /// The 8-bit image just before the float conversion: resized and center-cropped
    /// (`crop × crop`, zeros where the crop leaves the image).
    pub fn crop_u8(&self, img: &RgbImage) -> RgbImage {
        let resized = self.resize_u8(img);
        center_crop(
            &resized,
            self.crop_origin(resized.width(), resized.height()),
            self.params.crop,
        )
    }

    /// The per-channel lookup table `value (0..=255) → normalised f32`, bit-exact with the
    /// reference's float arithmetic.
    pub fn lut(&self) -> [[f32; 256]; 3] {
        let mut lut = [[0f32; 256]; 3];
        for (c, table) in lut.iter_mut().enumerate() {
            let (mean, std) = (self.params.mean[c], self.params.std[c]);
            for (v, out) in table.iter_mut().enumerate() {
                let scaled = match self.params.flavor {
                    // torch: uint8 → float32, then `.div(255)` in float32.
                    Flavor::Torchvision => v as f32 / 255.0,
                    // numpy: `image.astype(float64) * (1/255)`, then `.astype(float32)`.
                    Flavor::TransformersPil => (v as f64 * (1.0 / 255.0)) as f32,
                };
                *out = (scaled - mean) / std;
            }
        }
        lut
    }

    /// Converts an 8-bit `crop × crop` image (from [`Preprocessor::crop_u8`]) to the
    /// normalised CHW tensor.
    pub fn normalize(&self, cropped: &RgbImage) -> Vec<f32> {
        let lut = self.lut();
        let plane = cropped.width() as usize * cropped.height() as usize;
        let mut out = vec![0f32; 3 * plane];
        for (i, px) in cropped.pixels().enumerate() {
            for c in 0..3 {
                out[c * plane + i] = lut[c][px.0[c] as usize];
            }
        }
        out
    }

    /// Full pipeline for one image: CHW `f32`, length [`Preprocessor::output_len`].
    pub fn process(&self, img: &RgbImage) -> Vec<f32> {
        self.normalize(&self.crop_u8(img))
    }

    /// Full pipeline for a batch: NCHW `f32`, images in order, computed on up to
    /// `available_parallelism` threads.
    pub fn process_batch(&self, images: &[RgbImage]) -> Vec<f32> {
        let per = self.output_len();
        let mut out = vec![0f32; per * images.len()];
        if images.is_empty() {
            return out;
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(images.len());
        let chunk = images.len().div_ceil(threads);
        std::thread::scope(|scope| {
            for (imgs, outs) in images.chunks(chunk).zip(out.chunks_mut(chunk * per)) {
                scope.spawn(move || {
                    for (img, dst) in imgs.iter().zip(outs.chunks_exact_mut(per)) {
                        dst.copy_from_slice(&self.process(img));
                    }
                });
            }
        });
        out
    }
}

/// `int(round(d / 2))` with Python's round-half-to-even, for integer `d ≥ 0`.
fn round_half_even_div2(d: i64) -> i64 {
    let half = d / 2;
    if d % 2 == 0 || half % 2 == 0 {
        half
    } else {
        half + 1
    }
}

/// Copies the `size × size` window at `origin` out of `img`, filling with 0 outside.
pub fn center_crop(img: &RgbImage, origin: CropOrigin, size: u32) -> RgbImage {
    let (w, h) = (i64::from(img.width()), i64::from(img.height()));
    let mut out = RgbImage::new(size, size);
    for (x, y, px) in out.enumerate_pixels_mut() {
        let (sx, sy) = (origin.left + i64::from(x), origin.top + i64::from(y));
        if (0..w).contains(&sx) && (0..h).contains(&sy) {
            *px = *img.get_pixel(sx as u32, sy as u32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_round_half_even() {
        // round(16.5) == 16, round(17.5) == 18, round(100.5) == 100
        assert_eq!(round_half_even_div2(33), 16);
        assert_eq!(round_half_even_div2(35), 18);
        assert_eq!(round_half_even_div2(201), 100);
        assert_eq!(round_half_even_div2(32), 16);
        assert_eq!(round_half_even_div2(0), 0);
        assert_eq!(round_half_even_div2(1), 0);
        assert_eq!(round_half_even_div2(3), 2);
    }

    #[test]
    fn crop_origins_and_padding() {
        let dino = Preprocessor::dino_paper();
        let clip = Preprocessor::clip();
        assert_eq!(dino.crop_origin(259, 256), CropOrigin { left: 18, top: 16 });
        assert_eq!(clip.crop_origin(259, 224), CropOrigin { left: 17, top: 0 });
        // torchvision pads (c − h) // 2 before; transformers floor((h − c) / 2).
        assert_eq!(dino.crop_origin(221, 224).left, -1);
        assert_eq!(clip.crop_origin(221, 224).left, -2);
    }

    #[test]
    fn resized_sizes() {
        let dino = Preprocessor::dino_paper();
        assert_eq!(dino.resized_size(517, 311), (425, 256));
        assert_eq!(dino.resized_size(97, 403), (256, 1063));
        assert_eq!(dino.resized_size(300, 300), (256, 256));
        assert_eq!(Preprocessor::clip().resized_size(517, 311), (372, 224));
    }

    #[test]
    fn batch_matches_single() {
        let imgs: Vec<RgbImage> = (0..5)
            .map(|i| {
                RgbImage::from_fn(40 + i * 7, 30 + i * 3, |x, y| {
                    image::Rgb([(x * 5 + y) as u8, (y * 9) as u8, (x ^ y) as u8])
                })
            })
            .collect();
        let p = Preprocessor::dino_paper();
        let batch = p.process_batch(&imgs);
        for (i, img) in imgs.iter().enumerate() {
            assert_eq!(
                &batch[i * p.output_len()..(i + 1) * p.output_len()],
                &p.process(img)[..]
            );
        }
    }
}
