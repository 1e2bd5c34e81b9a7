//! Parity with PIL / torchvision / transformers on the fixtures written by
//! `tools/parity/make_preprocess_fixtures.py` (see `tools/parity/README.md`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use preprocess::{Error, Preprocessor, RgbImage, cmyk_to_rgb, open_rgb};
use serde_json::Value;

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

/// Decoders that are not bit-exact with PIL (libjpeg-turbo): the tolerated max |diff| and
/// fraction of differing channel values, set from measurements (see the crate docs).
fn jpeg_tolerance(name: &str) -> Option<(u8, f64)> {
    match name {
        "photo_jpeg" => Some((8, 0.5)),
        "cmyk" => Some((8, 0.5)),
        _ => None,
    }
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
        match jpeg_tolerance(name) {
            Some((tol_max, tol_frac)) => assert!(
                max <= tol_max && frac <= tol_frac,
                "{name}: JPEG decode max|diff| {max}, differing fraction {frac:.4}"
            ),
            None => assert_eq!(
                (max, n),
                (0, 0),
                "{name}: decode must be exact (max|diff| {max}, {n}/{total} differ)"
            ),
        }
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
