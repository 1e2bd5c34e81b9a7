//! Parity with transformers 5 on the tiny checkpoints of `tools/parity/make_detector_fixtures.py`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use detectors::{
    Detection, Detector, Owl, OwlDetector, OwlOptions, OwlVariant, imaging, post_process,
};
use encoders::checkpoint::Checkpoint;
use image::RgbImage;
use serde::Deserialize;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/detectors")
}

#[derive(Deserialize)]
struct Meta {
    subjects: Vec<String>,
    template: String,
    queries: Vec<String>,
    threshold: f32,
    batch_target_sizes: Vec<(u32, u32)>,
    batch: Vec<Vec<Detection>>,
    image_size: (u32, u32),
    image: Vec<Detection>,
}

struct Fixture {
    model: Owl,
    checkpoint: Checkpoint,
    refs: HashMap<String, Tensor>,
    meta: Meta,
}

fn load(name: &str) -> Fixture {
    let dir = fixtures();
    let checkpoint = Checkpoint::from_dir(&dir.join(name)).expect("checkpoint");
    let model = Owl::load(&checkpoint, &Device::Cpu).expect("load");
    let refs = candle_core::safetensors::load(
        dir.join(format!("{name}.reference.safetensors")),
        &Device::Cpu,
    )
    .expect("reference");
    let meta: Meta = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.detections.json"))).expect("json"),
    )
    .expect("meta");
    Fixture {
        model,
        checkpoint,
        refs,
        meta,
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

fn f32_ref(f: &Fixture, key: &str) -> Tensor {
    f.refs[key].to_dtype(DType::F32).unwrap()
}

fn compare_detections(label: &str, got: &[Detection], want: &[Detection], box_tol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{label}: {} detections, transformers {}",
        got.len(),
        want.len()
    );
    let mut worst_score = 0f32;
    let mut worst_box = 0f32;
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.query, w.query, "{label}: query differs");
        worst_score = worst_score.max((g.score - w.score).abs());
        for k in 0..4 {
            worst_box = worst_box.max((g.bbox[k] - w.bbox[k]).abs());
        }
    }
    assert!(
        worst_score < 1e-5 && worst_box < box_tol,
        "{label}: max |Δscore| {worst_score:e}, max |Δbox| {worst_box:e} px"
    );
    eprintln!("{label}: max |Δscore| {worst_score:e}, max |Δbox| {worst_box:e} px");
}

fn check(name: &str, variant: OwlVariant) {
    let f = load(name);
    assert_eq!(f.model.variant(), variant);
    let queries: Vec<&str> = f.meta.queries.iter().map(String::as_str).collect();
    for (s, q) in f.meta.subjects.iter().zip(&queries) {
        assert_eq!(f.meta.template.replacen("{}", s, 1), *q);
    }

    // Tokenisation: the processor's ids up to and including the EOS (the rest is padding).
    let ids = f.model.tokenize(&queries).unwrap();
    let want_ids = f.refs["input_ids"].to_dtype(DType::I64).unwrap();
    for (i, seq) in ids.iter().enumerate() {
        let want: Vec<i64> = want_ids.i(i).unwrap().to_vec1().unwrap();
        let got: Vec<i64> = seq.iter().map(|&v| v as i64).collect();
        assert_eq!(got, want[..got.len()], "{name}: ids of query {i}");
        assert!(want[got.len()..].iter().all(|&v| v == 0), "{name}: padding");
    }

    // Raw head outputs on the fixed pixel batch.
    let pixels = f32_ref(&f, "pixels");
    let q = f.model.embed_queries(&queries).unwrap();
    let out = f.model.forward(&pixels, &q).unwrap();
    let dl = max_diff(&out.logits, &f32_ref(&f, "logits"));
    let db = max_diff(&out.pred_boxes, &f32_ref(&f, "pred_boxes"));
    eprintln!("{name}: max |Δlogits| {dl:e}, max |Δboxes| {db:e}");
    assert!(dl < 1e-4, "{name}: max |Δlogits| {dl:e}");
    assert!(db < 1e-5, "{name}: max |Δboxes| {db:e}");
    match (&out.objectness_logits, f.refs.get("objectness_logits")) {
        (Some(got), Some(want)) => {
            let d = max_diff(got, want);
            eprintln!("{name}: max |Δobjectness| {d:e}");
            assert!(d < 1e-4, "{name}: max |Δobjectness| {d:e}");
        }
        (None, None) => {}
        _ => panic!("{name}: objectness head presence differs from transformers"),
    }

    // post_process_object_detection with the fixture's target sizes, on transformers' outputs
    // (isolates the post-processing) and on ours.
    for (b, &(h, w)) in f.meta.batch_target_sizes.iter().enumerate() {
        let want = &f.meta.batch[b];
        let ref_logits: Vec<f32> = f32_ref(&f, "logits")
            .i(b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let ref_boxes: Vec<f32> = f32_ref(&f, "pred_boxes")
            .i(b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let n_q = queries.len();
        let got = post_process(
            &ref_logits,
            &ref_boxes,
            n_q,
            f.meta.threshold,
            (w, h),
            variant,
        );
        compare_detections(&format!("{name} post-process image {b}"), &got, want, 1e-3);
        let logits: Vec<f32> = out
            .logits
            .i(b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let boxes: Vec<f32> = out
            .pred_boxes
            .i(b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let got = post_process(&logits, &boxes, n_q, f.meta.threshold, (w, h), variant);
        compare_detections(&format!("{name} end-to-end image {b}"), &got, want, 2e-2);
    }

    // Image preprocessing against the checkpoint's image processor.
    let img = f.refs["image_u8"].to_dtype(DType::U8).unwrap();
    let (h, w, _) = img.dims3().unwrap();
    assert_eq!((h as u32, w as u32), f.meta.image_size);
    let raw: Vec<u8> = img.flatten_all().unwrap().to_vec1().unwrap();
    let image = RgbImage::from_raw(w as u32, h as u32, raw).unwrap();
    let s = f.model.image_size();
    let ours = imaging::preprocess(&image, variant, s, 0.0).unwrap();
    let ours = Tensor::from_vec(ours, (1, 3, s, s), &Device::Cpu).unwrap();
    let dp = max_diff(&ours, &f32_ref(&f, "image_pixels"));
    eprintln!("{name}: preprocessing max |Δpixels| {dp:e}");
    assert!(dp < 1e-4, "{name}: preprocessing max |Δpixels| {dp:e}");

    if let Some(want) = f.refs.get("image2_pixels") {
        // OWL-ViT's resize on a second shape (the OWLv2 fixture's 150×211 image).
        let other = candle_core::safetensors::load(
            fixtures().join("owlv2_tiny.reference.safetensors"),
            &Device::Cpu,
        )
        .unwrap();
        let other = other["image_u8"].to_dtype(DType::U8).unwrap();
        let (h2, w2, _) = other.dims3().unwrap();
        let raw: Vec<u8> = other.flatten_all().unwrap().to_vec1().unwrap();
        let image2 = RgbImage::from_raw(w2 as u32, h2 as u32, raw).unwrap();
        let ours = imaging::preprocess(&image2, variant, s, 0.0).unwrap();
        let ours = Tensor::from_vec(ours, (1, 3, s, s), &Device::Cpu).unwrap();
        let dp = max_diff(&ours, want);
        eprintln!("{name}: preprocessing {h2}×{w2} max |Δpixels| {dp:e}");
        assert!(
            dp < 1e-4,
            "{name}: preprocessing {h2}×{w2} max |Δpixels| {dp:e}"
        );
    }

    // The Detector on the image, without NMS, against post_process_object_detection.
    let options = OwlOptions {
        template: f.meta.template.clone(),
        threshold: f.meta.threshold,
        nms_iou: None,
        pad_value: 0.0,
    };
    let detector = OwlDetector::load(&f.checkpoint, options, &Device::Cpu).unwrap();
    let got = detector.detect_raw(&image, &f.meta.subjects).unwrap();
    compare_detections(
        &format!("{name} detector on the image"),
        &got,
        &f.meta.image,
        1e-2,
    );
    let sorted = detector.detect(&image, &f.meta.subjects).unwrap();
    assert_eq!(sorted.len(), got.len());
    assert!(sorted.windows(2).all(|p| p[0].score >= p[1].score));
    let id = detector.identity();
    assert_eq!(
        id["family"],
        serde_json::json!(match variant {
            OwlVariant::OwlVit => "owlvit",
            OwlVariant::Owlv2 => "owlv2",
        })
    );
}

#[test]
fn owlvit_matches_transformers() {
    check("owlvit_tiny", OwlVariant::OwlVit);
}

#[test]
fn owlv2_matches_transformers() {
    check("owlv2_tiny", OwlVariant::Owlv2);
}

#[test]
fn wrong_image_size_is_an_error() {
    let f = load("owlvit_tiny");
    let q = f.model.embed_queries(&["a photo of a cat"]).unwrap();
    let pixels = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap();
    assert!(f.model.forward(&pixels, &q).is_err());
}
