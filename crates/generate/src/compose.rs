//! The `compose` generator: a deterministic synthetic scene with controlled identity collapse.
//!
//! Each reference subject of a job gets a box on a square canvas and its reference image is pasted
//! into it; a configurable number of subjects is then made to collapse, so identity metrics can be
//! checked where the truth is known:
//!
//! - `none`: every subject shows its own image;
//! - `clone {k}`: `k` subjects show the image of another, intact subject (the *source*);
//! - `drop {k}`: `k` subjects are left out (their slot stays background);
//! - `blend {k, alpha}`: `k` subjects show `(1 − alpha)·own + alpha·source`, pixel by pixel.
//!
//! Which subjects collapse, and which source each one copies, is drawn from `(prompt_id, seed)` with
//! a small self-contained PRNG (FNV-1a → SplitMix64), so it is the same on every machine and the same
//! subjects are affected whatever the mode. The layout depends only on the scene type and the
//! subjects' own aspect ratios, never on the collapse mode, so a subject's box is the same in every
//! mode:
//!
//! - [`Scene::Neutral`]: a grid of rows (`cols = ⌈√N⌉`, rows balanced), with margins and gaps, no
//!   overlap;
//! - [`Scene::Occlusion`]: the same rows, with neighbours in a row overlapping by 30 % of the
//!   narrower box (later subjects are drawn over earlier ones);
//! - [`Scene::Interaction`]: the same rows, with neighbours touching (adjacent boxes share an edge).
//!
//! A subject's image is cropped (centred) to its box's aspect ratio and resized with a triangle
//! filter, so the pasted image fills its box exactly; transparent references are composited over the
//! background first. The ground truth is returned as `Generated.extra["truth"]`, a [`Truth`].
//!
//! Settings (beside `adapter: compose` in a study's `models:`; every key optional):
//!
//! ```yaml
//! adapter: compose
//! size: 512                 # square canvas side in pixels
//! background: [255, 255, 255]
//! collapse: { mode: clone, k: 2 }   # or {mode: none} | {mode: drop, k: 1} | {mode: blend, k: 1, alpha: 0.5}
//! delay_ms: 0               # simulated latency (sleep) per image; not part of the identity
//! ```

use std::io::Cursor;
use std::path::Path;
use std::time::Duration;

use benchmark::Scene;
use benchmark::expand::PromptFormat;
use image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use image::imageops;
use image::{ImageEncoder, ImageReader, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::{Error, Generated, GenerationJob, Generator, Identity};

const ADAPTER: &str = "compose";
/// Smallest and largest canvas side accepted.
pub const MIN_SIZE: u32 = 32;
pub const MAX_SIZE: u32 = 8192;
/// Overlap of neighbours in an occlusion scene, as a fraction of the narrower box's width.
pub const OCCLUSION_OVERLAP: f64 = 0.3;

/// Settings of the `compose` adapter; every field has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ComposeSettings {
    /// Side of the square canvas in pixels (default 512).
    pub size: u32,
    /// Background colour (default white).
    pub background: [u8; 3],
    /// Controlled collapse (default none).
    pub collapse: Collapse,
    /// Simulated generation latency: `generate` sleeps this long (default 0). Does not affect the
    /// output and is therefore not part of the identity.
    pub delay_ms: u64,
}

impl Default for ComposeSettings {
    fn default() -> Self {
        ComposeSettings {
            size: 512,
            background: [255, 255, 255],
            collapse: Collapse::None,
            delay_ms: 0,
        }
    }
}

/// Which collapse the composed scenes show. `k` is the number of affected subjects per image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", deny_unknown_fields)]
pub enum Collapse {
    /// Every subject shows its own image.
    #[default]
    None,
    /// `k` subjects show the image of another, intact subject. Needs `k < N`.
    Clone { k: usize },
    /// `k` subjects are left out. Needs `k ≤ N`.
    Drop { k: usize },
    /// `k` subjects show `(1 − alpha)·own + alpha·source`. Needs `k < N` and `alpha ∈ [0, 1]`.
    Blend { k: usize, alpha: f32 },
}

/// What happened to one subject in a composed image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Present,
    Cloned,
    Dropped,
    Blended,
}

/// Ground truth of one composed image (`Generated.extra["truth"]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Truth {
    /// `[width, height]` of the canvas.
    pub canvas: [u32; 2],
    pub scene: Scene,
    /// One entry per reference, in the job's order (which is also the drawing order).
    pub subjects: Vec<SubjectTruth>,
}

/// Ground truth of one subject.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectTruth {
    pub name: String,
    pub status: Status,
    /// Whose identity the box shows: the subject itself when present, the source when cloned, the
    /// dominant one when blended (the source when `alpha ≥ 0.5`), `null` when dropped.
    pub shown: Option<String>,
    /// The other subject copied (cloned) or mixed in (blended); `null` otherwise.
    #[serde(default)]
    pub source: Option<String>,
    /// The source's weight; blended subjects only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f32>,
    /// Pixel box `[x0, y0, x1, y1]` of the pasted image (half-open: `x0 ≤ x < x1`); `null` when
    /// dropped. In occlusion scenes later subjects may cover part of it.
    #[serde(rename = "box")]
    pub bbox: Option<[u32; 4]>,
}

impl Truth {
    /// Reads the truth back from a generator's report.
    pub fn from_generated(generated: &Generated) -> Option<Result<Truth, serde_json::Error>> {
        generated.extra.get("truth").map(Truth::deserialize)
    }
}

/// The synthetic generator. See the module docs.
#[derive(Clone, Debug)]
pub struct Compose {
    settings: ComposeSettings,
}

impl Compose {
    /// Fails (`Error::Settings`) for a size outside `[MIN_SIZE, MAX_SIZE]` or an alpha outside `[0, 1]`.
    /// Whether `k` fits is only known per job, so it is checked by `generate`.
    pub fn new(settings: ComposeSettings) -> Result<Self, Error> {
        if !(MIN_SIZE..=MAX_SIZE).contains(&settings.size) {
            return Err(settings_error(format!(
                "size {} is outside [{MIN_SIZE}, {MAX_SIZE}]",
                settings.size
            )));
        }
        match settings.collapse {
            Collapse::Blend { alpha, .. } if !(0.0..=1.0).contains(&alpha) => {
                return Err(settings_error(format!(
                    "blend alpha {alpha} is outside [0, 1]"
                )));
            }
            _ => {}
        }
        Ok(Compose { settings })
    }

    pub fn settings(&self) -> &ComposeSettings {
        &self.settings
    }

    /// Composes the image for `job` in memory, with its ground truth.
    pub fn compose(&self, job: &GenerationJob) -> Result<(RgbImage, Truth), Error> {
        let refs = &job.prompt.references;
        let n = refs.len();
        if n == 0 {
            return Err(Error::Other(format!(
                "compose: job {} has no reference images",
                job_name(job)
            )));
        }
        let plan = plan(self.settings.collapse, n, &job.prompt_id, job.seed)
            .map_err(|message| settings_error(format!("job {}: {message}", job_name(job))))?;

        // Decode every reference once (also the ones only used as a source).
        let bg = self.settings.background;
        let images = refs
            .iter()
            .map(|r| load_reference(&r.image, bg))
            .collect::<Result<Vec<_>, _>>()?;
        let aspects: Vec<f64> = images
            .iter()
            .map(|im| f64::from(im.width()) / f64::from(im.height()))
            .collect();
        let size = self.settings.size;
        let boxes = layout(job.scene, size, &aspects)?;

        let mut canvas = RgbImage::from_pixel(size, size, Rgb(bg));
        let mut subjects = Vec::with_capacity(n);
        for (i, fate) in plan.iter().enumerate() {
            let b = boxes[i];
            let (w, h) = (b[2] - b[0], b[3] - b[1]);
            let name = refs[i].name.clone();
            let source_name = |j: usize| refs[j].name.clone();
            let (tile, truth) = match *fate {
                Fate::Present => (
                    Some(render(&images[i], w, h)),
                    SubjectTruth {
                        name: name.clone(),
                        status: Status::Present,
                        shown: Some(name),
                        source: None,
                        alpha: None,
                        bbox: Some(b),
                    },
                ),
                Fate::Cloned(j) => (
                    Some(render(&images[j], w, h)),
                    SubjectTruth {
                        name,
                        status: Status::Cloned,
                        shown: Some(source_name(j)),
                        source: Some(source_name(j)),
                        alpha: None,
                        bbox: Some(b),
                    },
                ),
                Fate::Dropped => (
                    None,
                    SubjectTruth {
                        name,
                        status: Status::Dropped,
                        shown: None,
                        source: None,
                        alpha: None,
                        bbox: None,
                    },
                ),
                Fate::Blended(j, alpha) => (
                    Some(blend(
                        &render(&images[i], w, h),
                        &render(&images[j], w, h),
                        alpha,
                    )),
                    SubjectTruth {
                        shown: Some(if alpha >= 0.5 {
                            source_name(j)
                        } else {
                            name.clone()
                        }),
                        name,
                        status: Status::Blended,
                        source: Some(source_name(j)),
                        alpha: Some(alpha),
                        bbox: Some(b),
                    },
                ),
            };
            if let Some(tile) = tile {
                imageops::replace(&mut canvas, &tile, i64::from(b[0]), i64::from(b[1]));
            }
            subjects.push(truth);
        }
        Ok((
            canvas,
            Truth {
                canvas: [size, size],
                scene: job.scene,
                subjects,
            },
        ))
    }
}

impl Generator for Compose {
    fn identity(&self) -> Identity {
        let s = &self.settings;
        Identity {
            adapter: ADAPTER.into(),
            version: "1".into(),
            model: Default::default(),
            // delay_ms is left out on purpose: it does not change the output.
            settings: serde_json::json!({
                "size": s.size,
                "background": s.background,
                "collapse": collapse_json(s.collapse),
            }),
        }
    }

    fn prompt_format(&self) -> PromptFormat {
        PromptFormat::Plain
    }

    fn generate(&self, job: &GenerationJob, out: &Path) -> Result<Generated, Error> {
        if self.settings.delay_ms > 0 {
            std::thread::sleep(Duration::from_millis(self.settings.delay_ms));
        }
        let (canvas, truth) = self.compose(job)?;
        let png = encode_png(&canvas)
            .map_err(|e| Error::Other(format!("encoding PNG for {}: {e}", job_name(job))))?;
        std::fs::write(out, png).map_err(|source| Error::Io {
            path: out.to_owned(),
            source,
        })?;
        let mut generated = Generated::default();
        generated.extra.insert(
            "truth".into(),
            serde_json::to_value(&truth)
                .map_err(|e| Error::Other(format!("serialising truth: {e}")))?,
        );
        Ok(generated)
    }
}

/// `collapse` as JSON, with alpha written as its shortest decimal form (`0.3`, not the f32's
/// widened `0.30000001192092896`); distinct f32 values still give distinct numbers.
fn collapse_json(collapse: Collapse) -> serde_json::Value {
    match collapse {
        Collapse::Blend { k, alpha } => {
            let alpha: f64 = alpha.to_string().parse().unwrap_or(f64::from(alpha));
            serde_json::json!({ "mode": "blend", "k": k, "alpha": alpha })
        }
        other => serde_json::to_value(other).unwrap_or(serde_json::Value::Null),
    }
}

fn settings_error(message: String) -> Error {
    Error::Settings {
        adapter: ADAPTER.into(),
        message,
    }
}

fn job_name(job: &GenerationJob) -> String {
    format!("{}/{}/{}", job.model, job.prompt_id, job.seed)
}

/// Encodes `image` as PNG with fixed settings, so equal pixels give equal bytes (for a given
/// `Cargo.lock`).
pub fn encode_png(image: &RgbImage) -> Result<Vec<u8>, image::ImageError> {
    let mut bytes = Vec::new();
    PngEncoder::new_with_quality(
        Cursor::new(&mut bytes),
        CompressionType::Fast,
        PngFilter::Adaptive,
    )
    .write_image(
        image.as_raw(),
        image.width(),
        image.height(),
        image::ExtendedColorType::Rgb8,
    )?;
    Ok(bytes)
}

/// Decodes a reference image to RGB, compositing any transparency over `background`.
pub fn load_reference(path: &Path, background: [u8; 3]) -> Result<RgbImage, Error> {
    let bad = |e: image::ImageError| Error::BadImage {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let decoded = ImageReader::open(path)
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?
        .with_guessed_format()
        .map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?
        .decode()
        .map_err(bad)?;
    if !decoded.color().has_alpha() {
        return Ok(decoded.into_rgb8());
    }
    let rgba = decoded.into_rgba8();
    let mut rgb = RgbImage::new(rgba.width(), rgba.height());
    for (dst, src) in rgb.pixels_mut().zip(rgba.pixels()) {
        let a = u32::from(src[3]);
        for c in 0..3 {
            dst[c] =
                ((u32::from(src[c]) * a + u32::from(background[c]) * (255 - a) + 127) / 255) as u8;
        }
    }
    Ok(rgb)
}

/// Renders `image` into a `w × h` box: crops it (centred) to the box's aspect ratio, then resizes it.
/// This is exactly what the composer pastes for a present or cloned subject.
///
/// The resize is self-contained integer arithmetic, so it is fast without optimisation and gives the
/// same bytes everywhere: when shrinking by 2× or more, whole `f × f` blocks are first averaged
/// (leaving at least twice the target size), then a separable triangle (bilinear, antialiased) filter
/// with 14-bit fixed-point weights and an 8-bit intermediate resamples to the exact size.
pub fn render(image: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (iw, ih) = image.dimensions();
    let (w, h) = (w.max(1), h.max(1));
    if iw == 0 || ih == 0 {
        return RgbImage::new(w, h);
    }
    // Crop to the target aspect: compare iw/ih with w/h in integers.
    let (mut cw, mut ch) = if u64::from(iw) * u64::from(h) > u64::from(ih) * u64::from(w) {
        (
            ((f64::from(ih) * f64::from(w) / f64::from(h)).round() as u32).clamp(1, iw),
            ih,
        )
    } else {
        (
            iw,
            ((f64::from(iw) * f64::from(h) / f64::from(w)).round() as u32).clamp(1, ih),
        )
    };
    // Block-average by an integer factor first (the crop shrinks to a multiple of it, still centred).
    let f = (cw / (2 * w)).min(ch / (2 * h)).max(1);
    cw -= cw % f;
    ch -= ch % f;
    let (x0, y0) = ((iw - cw) / 2, (ih - ch) / 2);
    let (sw, sh) = (cw / f, ch / f);
    let reduced = reduce(image, x0, y0, sw, sh, f);
    let horizontal = resample_rows(&reduced, sw as usize, sh as usize, w as usize);
    let out = resample_columns(&horizontal, w as usize, sh as usize, h as usize);
    RgbImage::from_raw(w, h, out).expect("buffer size matches")
}

/// The `sw × sh` RGB image whose pixels are the rounded means of the `f × f` blocks of `image`
/// starting at `(x0, y0)`.
fn reduce(image: &RgbImage, x0: u32, y0: u32, sw: u32, sh: u32, f: u32) -> Vec<u8> {
    let (iw, f, sw, sh) = (image.width() as usize, f as usize, sw as usize, sh as usize);
    let (x0, y0) = (x0 as usize, y0 as usize);
    let src = image.as_raw();
    let mut out = vec![0u8; sw * sh * 3];
    let mut sums = vec![0u32; sw * 3];
    let (n, half) = ((f * f) as u32, (f * f / 2) as u32);
    for oy in 0..sh {
        sums.fill(0);
        for y in y0 + oy * f..y0 + (oy + 1) * f {
            let row = &src[(y * iw + x0) * 3..(y * iw + x0 + sw * f) * 3];
            for (ox, block) in row.chunks_exact(3 * f).enumerate() {
                let sum = &mut sums[ox * 3..ox * 3 + 3];
                for px in block.chunks_exact(3) {
                    sum[0] += u32::from(px[0]);
                    sum[1] += u32::from(px[1]);
                    sum[2] += u32::from(px[2]);
                }
            }
        }
        for (o, s) in out[oy * sw * 3..(oy + 1) * sw * 3].iter_mut().zip(&sums) {
            *o = ((s + half) / n) as u8;
        }
    }
    out
}

const WEIGHT_BITS: u32 = 14;

/// Triangle-filter weights to resample `src` samples to `dst`: for each output, the first input
/// index and the fixed-point weights of the inputs from there on.
fn weights(src: usize, dst: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = src as f64 / dst as f64;
    let filter_scale = scale.max(1.0);
    let support = filter_scale; // the triangle's radius is 1 input sample at unit scale
    (0..dst)
        .map(|i| {
            let center = (i as f64 + 0.5) * scale;
            let first = ((center - support).floor().max(0.0)) as usize;
            let last = ((center + support).ceil() as usize).min(src);
            let raw: Vec<f64> = (first..last)
                .map(|j| (1.0 - ((j as f64 + 0.5 - center) / filter_scale).abs()).max(0.0))
                .collect();
            let total: f64 = raw.iter().sum();
            let fixed = raw
                .iter()
                .map(|w| (w / total * f64::from(1u32 << WEIGHT_BITS)).round() as i32)
                .collect();
            (first, fixed)
        })
        .collect()
}

fn to_u8(acc: i32) -> u8 {
    ((acc + (1 << (WEIGHT_BITS - 1))) >> WEIGHT_BITS).clamp(0, 255) as u8
}

/// Resamples each row of an RGB `sw × sh` image to `dw` pixels.
fn resample_rows(src: &[u8], sw: usize, sh: usize, dw: usize) -> Vec<u8> {
    if sw == dw {
        return src.to_vec();
    }
    let table = weights(sw, dw);
    let mut out = vec![0u8; dw * sh * 3];
    for (row, out_row) in src.chunks_exact(sw * 3).zip(out.chunks_exact_mut(dw * 3)) {
        for ((first, ws), o) in table.iter().zip(out_row.chunks_exact_mut(3)) {
            let mut acc = [0i32; 3];
            for (px, &w) in row[first * 3..(first + ws.len()) * 3]
                .chunks_exact(3)
                .zip(ws)
            {
                acc[0] += i32::from(px[0]) * w;
                acc[1] += i32::from(px[1]) * w;
                acc[2] += i32::from(px[2]) * w;
            }
            o[0] = to_u8(acc[0]);
            o[1] = to_u8(acc[1]);
            o[2] = to_u8(acc[2]);
        }
    }
    out
}

/// Resamples each column of an RGB `w × sh` image to `dh` pixels.
fn resample_columns(src: &[u8], w: usize, sh: usize, dh: usize) -> Vec<u8> {
    if sh == dh {
        return src.to_vec();
    }
    let table = weights(sh, dh);
    let stride = w * 3;
    let mut out = vec![0u8; stride * dh];
    let mut acc = vec![0i32; stride];
    for ((first, ws), out_row) in table.iter().zip(out.chunks_exact_mut(stride)) {
        acc.fill(0);
        for (k, &wt) in ws.iter().enumerate() {
            let row = &src[(first + k) * stride..(first + k + 1) * stride];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += i32::from(v) * wt;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = to_u8(a);
        }
    }
    out
}

/// `(1 − alpha)·a + alpha·b`, per channel, rounded. `alpha = 0` gives `a` exactly.
pub fn blend(a: &RgbImage, b: &RgbImage, alpha: f32) -> RgbImage {
    assert_eq!(a.dimensions(), b.dimensions());
    let mut out = a.clone();
    for (o, q) in out.iter_mut().zip(b.iter()) {
        *o = ((1.0 - alpha) * f32::from(*o) + alpha * f32::from(*q))
            .round()
            .clamp(0.0, 255.0) as u8;
    }
    out
}

/// Boxes `[x0, y0, x1, y1]` (half-open) for subjects with the given aspect ratios (width / height)
/// on a `size × size` canvas, by scene type (see the module docs). Every box has the aspect of its
/// subject (up to rounding), lies inside the canvas and inside the margins.
pub fn layout(scene: Scene, size: u32, aspects: &[f64]) -> Result<Vec<[u32; 4]>, Error> {
    let n = aspects.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let margin = size / 16;
    let gap = (size / 32).max(1);
    let avail = size - 2 * margin;
    let cols = (1..=n).find(|c| c * c >= n).unwrap_or(n);
    let rows = n.div_ceil(cols);
    let band = (avail.saturating_sub(gap * (rows as u32 - 1))) / rows as u32;
    if band == 0 {
        return Err(Error::Other(format!(
            "compose: {n} subjects do not fit a {size}×{size} canvas"
        )));
    }
    let (base, extra) = (n / rows, n % rows);
    let mut boxes = Vec::with_capacity(n);
    let mut first = 0;
    for r in 0..rows {
        let count = base + usize::from(r < extra);
        let row = &aspects[first..first + count];
        first += count;
        // Largest height (≤ band) at which the row fits the available width.
        let mut h = band;
        let (widths, steps, total) = loop {
            let (widths, steps, total) = row_geometry(scene, row, h, gap);
            if total <= i64::from(avail) {
                break (widths, steps, total);
            }
            if h == 1 {
                return Err(Error::Other(format!(
                    "compose: {n} subjects do not fit a {size}×{size} canvas"
                )));
            }
            let scaled = (f64::from(h) * f64::from(avail) / total as f64).floor() as u32;
            h = scaled.clamp(1, h - 1);
        };
        let y0 = margin + r as u32 * (band + gap) + (band - h) / 2;
        let mut x = i64::from(margin) + (i64::from(avail) - total) / 2;
        for (i, w) in widths.iter().enumerate() {
            let x0 = x as u32;
            boxes.push([x0, y0, x0 + w, y0 + h]);
            if let Some(step) = steps.get(i) {
                x += step;
            }
        }
    }
    Ok(boxes)
}

/// Widths at height `h`, the advance from each box's left edge to the next one's, and the row's
/// total width.
fn row_geometry(scene: Scene, aspects: &[f64], h: u32, gap: u32) -> (Vec<u32>, Vec<i64>, i64) {
    let widths: Vec<u32> = aspects
        .iter()
        .map(|a| ((f64::from(h) * a).round() as u32).max(1))
        .collect();
    let steps: Vec<i64> = widths
        .windows(2)
        .map(|pair| {
            let w = i64::from(pair[0]);
            match scene {
                Scene::Neutral => w + i64::from(gap),
                Scene::Interaction => w,
                Scene::Occlusion => {
                    let overlap = ((f64::from(pair[0].min(pair[1])) * OCCLUSION_OVERLAP).round()
                        as i64)
                        .max(1);
                    // Keep at least one column of the earlier box visible.
                    w - overlap.min(w - 1)
                }
            }
        })
        .collect();
    let total = steps.iter().sum::<i64>() + i64::from(*widths.last().unwrap_or(&0));
    (widths, steps, total)
}

/// What happens to one subject.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fate {
    Present,
    Cloned(usize),
    Dropped,
    Blended(usize, f32),
}

/// Draws the fate of each of `n` subjects for `(prompt_id, seed)`. The affected subjects are the
/// same for every mode with the same `k`.
fn plan(collapse: Collapse, n: usize, prompt_id: &str, seed: u64) -> Result<Vec<Fate>, String> {
    let (k, needs_source) = match collapse {
        Collapse::None => return Ok(vec![Fate::Present; n]),
        Collapse::Clone { k } | Collapse::Blend { k, .. } => (k, true),
        Collapse::Drop { k } => (k, false),
    };
    if needs_source && k >= n {
        return Err(format!(
            "{collapse:?} needs k < N so that an intact source remains, but k = {k} and N = {n}"
        ));
    }
    if k > n {
        return Err(format!("{collapse:?} needs k ≤ N, but k = {k} and N = {n}"));
    }
    let mut rng = SplitMix64::new(job_seed(prompt_id, seed));
    let mut order: Vec<usize> = (0..n).collect();
    for t in 0..k {
        let j = t + rng.below(n - t);
        order.swap(t, j);
    }
    let affected = &order[..k];
    let mut intact: Vec<usize> = order[k..].to_vec();
    intact.sort_unstable();
    let mut fates = vec![Fate::Present; n];
    for &i in affected {
        fates[i] = match collapse {
            Collapse::Clone { .. } => Fate::Cloned(intact[rng.below(intact.len())]),
            Collapse::Blend { alpha, .. } => Fate::Blended(intact[rng.below(intact.len())], alpha),
            Collapse::Drop { .. } => Fate::Dropped,
            Collapse::None => Fate::Present,
        };
    }
    Ok(fates)
}

/// FNV-1a (64-bit) of the prompt id, a separator byte and the seed's little-endian bytes.
fn job_seed(prompt_id: &str, seed: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in prompt_id
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(&seed.to_le_bytes())
    {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and the same everywhere.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (multiply-shift; the bias is negligible for small `n`). `n > 0`.
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (from the reference implementation).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn plan_picks_k_distinct_and_sources_intact() {
        for seed in 0..50 {
            let fates = plan(Collapse::Clone { k: 3 }, 6, "11_interaction", seed).unwrap();
            let cloned: Vec<usize> = fates
                .iter()
                .enumerate()
                .filter(|(_, f)| matches!(f, Fate::Cloned(_)))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(cloned.len(), 3);
            for f in &fates {
                if let Fate::Cloned(j) = f {
                    assert_eq!(fates[*j], Fate::Present);
                }
            }
            // The same subjects are dropped as cloned.
            let dropped: Vec<usize> = plan(Collapse::Drop { k: 3 }, 6, "11_interaction", seed)
                .unwrap()
                .iter()
                .enumerate()
                .filter(|(_, f)| **f == Fate::Dropped)
                .map(|(i, _)| i)
                .collect();
            assert_eq!(dropped, cloned);
        }
        assert!(plan(Collapse::Clone { k: 2 }, 2, "x", 1).is_err());
        assert!(plan(Collapse::Blend { k: 2, alpha: 0.5 }, 2, "x", 1).is_err());
        assert!(plan(Collapse::Drop { k: 2 }, 2, "x", 1).is_ok());
        assert!(plan(Collapse::Drop { k: 3 }, 2, "x", 1).is_err());
    }

    #[test]
    fn layout_fits_for_every_count_and_scene() {
        for scene in Scene::ALL {
            for n in 1..=16 {
                for size in [MIN_SIZE, 100, 512, 1024] {
                    let aspects: Vec<f64> = (0..n).map(|i| [1.0, 0.6, 1.4][i % 3]).collect();
                    let boxes = layout(scene, size, &aspects).unwrap();
                    assert_eq!(boxes.len(), n);
                    for b in &boxes {
                        assert!(
                            b[0] < b[2] && b[1] < b[3] && b[2] <= size && b[3] <= size,
                            "{scene} {n} {size} {b:?}"
                        );
                    }
                }
            }
        }
    }
}
