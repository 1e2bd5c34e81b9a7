//! Parity with PIL / torchvision / transformers on the fixtures written by
//! `tools/parity/make_preprocess_fixtures.py` (see `tools/parity/README.md`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use preprocess::{Error, Preprocessor, RgbImage, cmyk_to_rgb, open_rgb};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/preprocess")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures_dir().join("manifest.json")).expect("manifest");
    serde_json::from_str(&text).expect("manifest json")
}

/// Reference PNGs are read with the `image` crate (independent of the code under test).
fn read_png_rgb(path: &Path) -> RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

/// Minimal safetensors reader (F32 tensors only).
fn read_floats(path: &Path) -> HashMap<String, Vec<f32>> {
    let bytes = std::fs::read(path).expect("floats.safetensors");
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("header length")) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + n]).expect("header json");
    let data = &bytes[8 + n..];
    let mut out = HashMap::new();
    for (name, meta) in header.as_object().expect("header object") {
        if name == "__metadata__" {
            continue;
        }
        assert_eq!(meta["dtype"], "F32", "{name}");
        let start = meta["data_offsets"][0].as_u64().expect("offset") as usize;
        let end = meta["data_offsets"][1].as_u64().expect("offset") as usize;
        let values = data[start..end]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect();
        out.insert(name.clone(), values);
    }
    out
}

/// (max |diff|, number of differing channel values, total channel values)
fn diff_u8(a: &RgbImage, b: &RgbImage) -> (u8, usize, usize) {
    assert_eq!(a.dimensions(), b.dimensions(), "dimensions");
    let mut max = 0u8;
    let mut count = 0usize;
    for (x, y) in a.as_raw().iter().zip(b.as_raw()) {
        let d = x.abs_diff(*y);
        max = max.max(d);
        count += usize::from(d != 0);
    }
    (max, count, a.as_raw().len())
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn decoding_matches_pil_convert_rgb() {
    let m = manifest();
    let dir = fixtures_dir();
    for f in m["fixtures"].as_array().expect("fixtures") {
        let name = f["name"].as_str().expect("name");
        let input = dir.join(f["input"].as_str().expect("input"));
        let ours = open_rgb(&input).unwrap_or_else(|e| panic!("{e}"));
        let pil = read_png_rgb(&dir.join(format!("expected/{name}.rgb.png")));
        let (max, n, total) = diff_u8(&ours, &pil);
        let frac = n as f64 / total as f64;
        println!(
            "decode {name:12} mode {:5} max|diff| {max} differing {n}/{total} ({:.4}%)",
            f["pil_mode"].as_str().unwrap_or("?"),
            100.0 * frac
        );
        assert_eq!(
            (max, n),
            (0, 0),
            "{name}: decode must be exact (max|diff| {max}, {n}/{total} differ)"
        );
    }
}

#[test]
fn cmyk_conversion_is_pil_exact() {
    let dir = fixtures_dir();
    let raw = image::open(dir.join("expected/cmyk.cmyk_raw.png"))
        .expect("cmyk_raw")
        .to_rgba8();
    let pil = read_png_rgb(&dir.join("expected/cmyk.rgb.png"));
    let ours = RgbImage::from_fn(raw.width(), raw.height(), |x, y| {
        image::Rgb(cmyk_to_rgb(raw.get_pixel(x, y).0))
    });
    let (max, n, total) = diff_u8(&ours, &pil);
    println!("cmyk2rgb max|diff| {max} differing {n}/{total}");
    assert_eq!(max, 0);
}

#[test]
fn stages_match_torchvision_and_transformers() {
    let m = manifest();
    let dir = fixtures_dir();
    let stride = m["stride"].as_u64().expect("stride") as usize;
    let floats = read_floats(&dir.join("expected/floats.safetensors"));
    let pipelines = [
        ("dino", Preprocessor::dino_paper()),
        ("clip", Preprocessor::clip()),
    ];
    for f in m["fixtures"].as_array().expect("fixtures") {
        let name = f["name"].as_str().expect("name");
        // Input baseline: PIL's decoded RGB (so JPEG decoder differences do not leak in).
        let rgb = read_png_rgb(&dir.join(format!("expected/{name}.rgb.png")));
        for (tag, p) in &pipelines {
            let expected_size = &f[format!("{tag}_resized")];
            let resized = p.resize_u8(&rgb);
            assert_eq!(
                [resized.width() as u64, resized.height() as u64],
                [
                    expected_size[0].as_u64().expect("w"),
                    expected_size[1].as_u64().expect("h")
                ],
                "{name} {tag}: resized size"
            );
            let resized_png = dir.join(format!("expected/{name}.{tag}_resized.png"));
            if resized_png.exists() {
                let (max, n, total) = diff_u8(&resized, &read_png_rgb(&resized_png));
                println!("{tag} resize {name:12} max|diff| {max} differing {n}/{total}");
                assert_eq!(
                    max, 0,
                    "{name} {tag}: resize not exact ({n}/{total} differ)"
                );
            }
            let crop = p.crop_u8(&rgb);
            let (max, n, total) = diff_u8(
                &crop,
                &read_png_rgb(&dir.join(format!("expected/{name}.{tag}_crop.png"))),
            );
            println!("{tag} crop   {name:12} max|diff| {max} differing {n}/{total}");
            assert_eq!(
                max, 0,
                "{name} {tag}: resize+crop not exact ({n}/{total} differ)"
            );

            let tensor = p.process(&rgb);
            assert_eq!(tensor.len(), 3 * 224 * 224);
            let sampled: Vec<f32> = tensor.iter().step_by(stride).copied().collect();
            let d = max_abs(&sampled, &floats[&format!("{tag}/{name}")]);
            println!("{tag} tensor {name:12} max|diff| {d:e}");
            assert!(d <= 1e-6, "{name} {tag}: tensor max|diff| {d:e}");
        }
    }
}

#[test]
fn float_stage_matches_for_every_level() {
    let floats = read_floats(&fixtures_dir().join("expected/floats.safetensors"));
    for (tag, p) in [
        ("dino", Preprocessor::dino_paper()),
        ("clip", Preprocessor::clip()),
    ] {
        let ours: Vec<f32> = p.lut().iter().flatten().copied().collect();
        let d = max_abs(&ours, &floats[&format!("lut_{tag}")]);
        println!("{tag} lut max|diff| {d:e}");
        assert!(d <= 1e-6, "{tag}: {d:e}");
    }
}

#[test]
fn errors_name_the_file() {
    let missing = fixtures_dir().join("inputs/does-not-exist.png");
    let err = open_rgb(&missing).expect_err("missing file");
    assert!(matches!(err, Error::Io { .. }));
    assert!(err.to_string().contains("does-not-exist.png"), "{err}");

    let manifest = fixtures_dir().join("manifest.json");
    let err = open_rgb(&manifest).expect_err("not an image");
    assert!(matches!(err, Error::UnsupportedFormat { .. }));
    assert!(err.to_string().contains("manifest.json"), "{err}");

    let truncated = std::fs::read(fixtures_dir().join("inputs/square_rgb.png")).expect("read");
    let err = preprocess::decode_rgb(&truncated[..200], Path::new("cut.png")).expect_err("cut");
    assert!(err.to_string().contains("cut.png"), "{err}");

    // A JPEG cut in the middle of its scan: libjpeg alone would pad it with gray, PIL raises
    // "image file is truncated"; so do we (and libjpeg's error path unwinds cleanly, repeatedly).
    let jpeg = std::fs::read(fixtures_dir().join("inputs/photo_jpeg.jpg")).expect("read");
    for _ in 0..3 {
        let err = preprocess::decode_rgb(&jpeg[..jpeg.len() / 2], Path::new("cut.jpg"))
            .expect_err("truncated jpeg");
        assert!(matches!(err, Error::Decode { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("cut.jpg") && text.contains("truncated"),
            "{text}"
        );
    }
    // Cut inside the headers: a libjpeg fatal error, reported, not printed or aborted.
    let err = preprocess::decode_rgb(&jpeg[..40], Path::new("head.jpg")).expect_err("header");
    assert!(err.to_string().contains("head.jpg"), "{err}");
    // Not a JPEG after the SOI marker.
    let mut bogus = vec![0xFF, 0xD8, 0xFF];
    bogus.extend_from_slice(&[0x17; 64]);
    let err = preprocess::decode_rgb(&bogus, Path::new("bogus.jpg")).expect_err("bogus");
    assert!(err.to_string().contains("bogus.jpg"), "{err}");
    // The decoder is still fine afterwards.
    assert!(preprocess::decode_rgb(&jpeg, Path::new("ok.jpg")).is_ok());
}

/// The paper's reference images (`../shared/datasets/p13n-workshop/val_dataset`, beside the
/// repository root, never committed) decode to exactly PIL's pixels: the committed
/// `paper_decodes.json` holds the sha256 of PIL 13's `Image.open(p).convert("RGB")` bytes per
/// file (`make_preprocess_fixtures.py --paper-jpegs DIR --digests FILE`).
#[test]
fn paper_references_decode_exactly_like_pil() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/datasets/p13n-workshop/val_dataset");
    let text = std::fs::read_to_string(fixtures_dir().join("paper_decodes.json"))
        .expect("paper_decodes.json");
    let doc: Value = serde_json::from_str(&text).expect("paper_decodes json");
    let expected = doc["files"].as_object().expect("files");
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            let n = n.to_ascii_lowercase();
            n.ends_with(".jpg") || n.ends_with(".jpeg") || n.ends_with(".png")
        })
        .collect();
    present.sort();
    let listed: Vec<String> = expected.keys().cloned().collect();
    assert_eq!(present, listed, "images in {} vs digests", dir.display());
    assert_eq!(
        listed.iter().filter(|n| n.ends_with(".jpg")).count(),
        29,
        "the paper has 29 JPEG references"
    );
    for (name, want) in expected {
        let rgb = open_rgb(&dir.join(name)).unwrap_or_else(|e| panic!("{e}"));
        let size = [u64::from(rgb.width()), u64::from(rgb.height())];
        let want_size = [
            want["size"][0].as_u64().expect("w"),
            want["size"][1].as_u64().expect("h"),
        ];
        assert_eq!(size, want_size, "{name}: size");
        let digest = hex::encode(Sha256::digest(rgb.as_raw()));
        assert_eq!(
            digest,
            want["rgb_sha256"].as_str().expect("digest"),
            "{name}: decoded RGB differs from PIL's (sha256)"
        );
    }
}

/// Decoder comparison on a directory of JPEGs (and PNGs) against PIL's decodes of the same files
/// (`make_preprocess_fixtures.py --paper-jpegs DIR --pil-out OUT`). Run with
/// `PREPROCESS_JPEG_DIR=DIR PREPROCESS_PIL_DIR=OUT cargo test -p preprocess -- --ignored --nocapture`.
#[test]
#[ignore = "needs PREPROCESS_JPEG_DIR and PREPROCESS_PIL_DIR"]
fn jpeg_decoder_vs_pil() {
    let (Ok(jpegs), Ok(pil)) = (
        std::env::var("PREPROCESS_JPEG_DIR"),
        std::env::var("PREPROCESS_PIL_DIR"),
    ) else {
        panic!("set PREPROCESS_JPEG_DIR and PREPROCESS_PIL_DIR");
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(&jpegs)
        .expect("jpeg dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("png"))
        })
        .collect();
    entries.sort();
    let (mut worst, mut all_n, mut all_total) = (0u8, 0usize, 0usize);
    let mut exact_files = 0;
    let mut all_hist = [0usize; 4];
    for path in &entries {
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("stem");
        let ours = open_rgb(path).unwrap_or_else(|e| panic!("{e}"));
        let theirs = read_png_rgb(&Path::new(&pil).join(format!("{stem}.png")));
        let (max, n, total) = diff_u8(&ours, &theirs);
        let mut hist = [0usize; 4];
        for (a, b) in ours.as_raw().iter().zip(theirs.as_raw()) {
            hist[usize::from(a.abs_diff(*b)).min(3)] += 1;
        }
        println!(
            "{stem:24} {}x{} max|diff| {max:3} differing {:.3}% (|d|=1 {:.3}%, 2 {:.3}%, >=3 {:.4}%)",
            ours.width(),
            ours.height(),
            100.0 * n as f64 / total as f64,
            100.0 * hist[1] as f64 / total as f64,
            100.0 * hist[2] as f64 / total as f64,
            100.0 * hist[3] as f64 / total as f64
        );
        worst = worst.max(max);
        for (a, h) in all_hist.iter_mut().zip(hist) {
            *a += h;
        }
        all_n += n;
        all_total += total;
        exact_files += usize::from(n == 0);
    }
    println!(
        "{} files ({exact_files} exact): max|diff| {worst}, differing {:.3}% of channel values \
         (|d|=1 {:.3}%, 2 {:.3}%, >=3 {:.4}%)",
        entries.len(),
        100.0 * all_n as f64 / all_total as f64,
        100.0 * all_hist[1] as f64 / all_total as f64,
        100.0 * all_hist[2] as f64 / all_total as f64,
        100.0 * all_hist[3] as f64 / all_total as f64
    );
}
