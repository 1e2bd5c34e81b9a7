//! Parity with transformers 5 (and torch-hub-style DINOv2 interpolation) on the tiny checkpoints
//! made by `tools/parity/make_encoder_fixtures.py`, plus loading and error behaviour.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use encoders::checkpoint::{hub_cache_dir_from, resolve_cached};
use encoders::{
    Checkpoint, Clip, ClipOptions, Dino, DinoOptions, Dinov2, Dinov2Options, Error, ImageEncoder,
    Interpolation, ModelSpec,
};

/// Embeddings must agree with the references to this (measured max |diff| 4e-7..1.1e-6; printed per case).
const TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/encoders")
}

fn load(name: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(fixtures().join(name), &Device::Cpu).expect("fixture file")
}

fn inputs() -> HashMap<String, Tensor> {
    load("inputs.safetensors")
        .into_iter()
        .map(|(k, v)| (k, v.to_dtype(DType::F32).unwrap()))
        .collect()
}

fn checkpoint(name: &str) -> Checkpoint {
    Checkpoint::resolve(&ModelSpec::new(fixtures().join(name).display().to_string())).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
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

fn check(label: &str, ours: &Tensor, expected: &Tensor) -> f32 {
    let diff = max_diff(ours, expected);
    println!("{label}: max |diff| = {diff:.2e}");
    assert!(
        diff < TOL,
        "{label}: max |diff| {diff:.2e} exceeds {TOL:.0e}"
    );
    diff
}

fn dinov2_parity(name: &str) {
    let inputs = inputs();
    let reference = load(&format!("{name}.reference.safetensors"));
    for mode in [Interpolation::TorchHub, Interpolation::Hf] {
        let model = Dinov2::load(
            &checkpoint(name),
            Dinov2Options {
                interpolation: mode,
            },
            &Device::Cpu,
        )
        .unwrap();
        for key in ["images_70", "images_224", "images_224x280"] {
            let ours = model.embed(&inputs[key]).unwrap();
            check(
                &format!("{name} {} {key}", mode.as_str()),
                &ours,
                &reference[&format!("{}/{key}", mode.as_str())],
            );
        }
    }
}

#[test]
fn dinov2_matches_transformers_and_torch_hub_within_1e_5() {
    dinov2_parity("dinov2_tiny");
}

#[test]
fn dinov2_swiglu_matches_transformers_and_torch_hub_within_1e_5() {
    dinov2_parity("dinov2_swiglu_tiny");
}

#[test]
fn interpolation_modes_differ_at_224() {
    let reference = load("dinov2_tiny.reference.safetensors");
    let diff = max_diff(
        &reference["hf/images_224"],
        &reference["torch_hub/images_224"],
    );
    println!("torch_hub vs hf at 224: max |diff| = {diff:.2e}");
    assert!(diff > 1e-3, "the fixture must tell the modes apart");
}

#[test]
fn dinov2_registers_matches_transformers_within_1e_5() {
    let model = Dinov2::load(
        &checkpoint("dinov2_registers_tiny"),
        Dinov2Options::default(),
        &Device::Cpu,
    )
    .unwrap();
    let reference = load("dinov2_registers_tiny.reference.safetensors");
    let ours = model.embed(&inputs()["images_224"]).unwrap();
    check(
        "dinov2_registers hf images_224",
        &ours,
        &reference["hf/images_224"],
    );
    let err = model.embed(&inputs()["images_224x280"]).unwrap_err();
    assert!(err.to_string().contains("native"), "{err}");
}

#[test]
fn dino_matches_transformers_within_1e_5() {
    let model = Dino::load(
        &checkpoint("dino_vits16_tiny"),
        DinoOptions::default(),
        &Device::Cpu,
    )
    .unwrap();
    let reference = load("dino_vits16_tiny.reference.safetensors");
    let ours = model.embed(&inputs()["images_224"]).unwrap();
    check("dino_vits16 images_224", &ours, &reference["hf/images_224"]);
}

fn prompts() -> Vec<String> {
    let text = std::fs::read_to_string(fixtures().join("clip_tiny.prompts.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn clip_matches_transformers_within_1e_5() {
    let model = Clip::load(
        &checkpoint("clip_tiny"),
        ClipOptions::default(),
        &Device::Cpu,
    )
    .unwrap();
    let reference = load("clip_tiny.reference.safetensors");
    let images = model.embed_images(&inputs()["images_224"]).unwrap();
    check(
        "clip image images_224",
        &images,
        &reference["hf/images_224"],
    );

    let prompts = prompts();
    let texts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    // Tokenisation equals the HF tokenizer's (padding stripped with the attention mask).
    let ids = model.text().unwrap().tokenize(&texts).unwrap();
    let hf_ids = reference["input_ids"].to_vec2::<i64>().unwrap();
    let mask = reference["attention_mask"].to_vec2::<i64>().unwrap();
    for ((ours, theirs), mask) in ids.iter().zip(&hf_ids).zip(&mask) {
        let theirs: Vec<u32> = theirs
            .iter()
            .zip(mask)
            .filter(|(_, m)| **m == 1)
            .map(|(t, _)| *t as u32)
            .collect();
        assert_eq!(ours, &theirs);
    }
    assert_eq!(
        ids[2].len(),
        77,
        "the long prompt is truncated to 77 tokens"
    );
    let text = model.embed_texts(&texts).unwrap();
    check(
        "clip text (padded batch)",
        &text,
        &reference["text_features"],
    );
    check(
        "clip text (one by one, HF)",
        &text,
        &reference["text_features_unpadded"],
    );
    // Padding does not change a text's features.
    for (i, t) in texts.iter().enumerate() {
        let one = model.embed_texts(&[t]).unwrap();
        let diff = max_diff(&one, &text.i(i..i + 1).unwrap());
        assert!(
            diff < 1e-5,
            "text {i}: alone vs in batch differ by {diff:.2e}"
        );
    }
}

#[test]
fn a_batch_of_one_equals_the_row_of_a_batch() {
    let model = Dinov2::load(
        &checkpoint("dinov2_tiny"),
        Dinov2Options::default(),
        &Device::Cpu,
    )
    .unwrap();
    let x = &inputs()["images_224x280"];
    let batch = model.embed(x).unwrap();
    for i in 0..2 {
        let one = model.embed(&x.i(i..i + 1).unwrap()).unwrap();
        let diff = max_diff(&one, &batch.i(i..i + 1).unwrap());
        assert!(diff < 1e-5, "row {i}: {diff:.2e}");
    }
}

#[test]
fn trait_objects_embed_flat_pixels() {
    let device = Device::Cpu;
    let encoder: Box<dyn ImageEncoder> = Box::new(
        encoders::Encoder::dinov2(
            &checkpoint("dinov2_tiny"),
            Dinov2Options::default(),
            &device,
        )
        .unwrap(),
    );
    let x = &inputs()["images_224"];
    let flat = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let rows = encoder.embed_images(&flat, 3, 224, 224).unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].len(), encoder.dim());
    assert_eq!(
        encoder.identity().interpolation,
        Some(Interpolation::TorchHub)
    );
    assert!(encoder.embed_images(&flat, 2, 224, 224).is_err());
    assert!(
        encoder
            .embed_images(&flat[..3 * 3 * 70 * 70 * 3], 9, 70, 70)
            .is_ok()
    );
    assert!(encoder.embed_images(&[], 0, 224, 224).unwrap().is_empty());
    let odd = vec![0f32; 3 * 100 * 100];
    let err = encoder.embed_images(&odd, 1, 100, 100).unwrap_err();
    assert!(err.to_string().contains("patch size 14"), "{err}");
}

/// A copy of a fixture checkpoint in a temp dir, for breaking.
fn copy_checkpoint(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixtures().join(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn edit_config(dir: &Path, key: &str, value: serde_json::Value) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config[key] = value;
    std::fs::write(&path, config.to_string()).unwrap();
}

fn load_dinov2_dir(dir: &Path) -> Result<Dinov2, Error> {
    let ck = Checkpoint::resolve(&ModelSpec::new(dir.display().to_string()))?;
    Dinov2::load(&ck, Dinov2Options::default(), &Device::Cpu)
}

#[test]
fn wrong_shape_names_tensor_and_shapes() {
    let dir = copy_checkpoint("dinov2_tiny");
    edit_config(dir.path(), "mlp_ratio", 2.into());
    let err = load_dinov2_dir(dir.path()).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::ShapeMismatch { .. }), "{msg}");
    assert!(msg.contains("encoder.layer.0.mlp.fc1.weight"), "{msg}");
    assert!(
        msg.contains("[128, 32]") && msg.contains("[64, 32]"),
        "{msg}"
    );
}

#[test]
fn missing_tensor_is_named() {
    let dir = copy_checkpoint("dinov2_tiny");
    let file = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    let t = tensors.remove("encoder.layer.1.norm2.bias").unwrap();
    tensors.insert("encoder.layer.1.norm2.bias_renamed".into(), t);
    candle_core::safetensors::save(&tensors, &file).unwrap();
    let err = load_dinov2_dir(dir.path()).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::MissingTensor { .. }), "{msg}");
    assert!(msg.contains("`encoder.layer.1.norm2.bias`"), "{msg}");

    let dir = copy_checkpoint("dinov2_tiny");
    edit_config(dir.path(), "num_hidden_layers", 3.into());
    let msg = load_dinov2_dir(dir.path()).err().unwrap().to_string();
    assert!(msg.contains("encoder.layer.2."), "{msg}");
}

#[test]
fn missing_weights_and_bad_config_are_clear() {
    let dir = copy_checkpoint("dinov2_tiny");
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let msg = load_dinov2_dir(dir.path()).err().unwrap().to_string();
    assert!(msg.contains("model.safetensors is missing"), "{msg}");

    let dir = copy_checkpoint("dinov2_tiny");
    edit_config(dir.path(), "hidden_act", "mish".into());
    let msg = load_dinov2_dir(dir.path()).err().unwrap().to_string();
    assert!(msg.contains("hidden_act `mish`"), "{msg}");
}

#[test]
fn sharded_checkpoints_load() {
    let dir = copy_checkpoint("dinov2_tiny");
    let file = dir.path().join("model.safetensors");
    let tensors = candle_core::safetensors::load(&file, &Device::Cpu).unwrap();
    std::fs::remove_file(&file).unwrap();
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (i, (k, v)) in tensors.into_iter().enumerate() {
        let shard = if i % 2 == 0 {
            "model-00001-of-00002.safetensors"
        } else {
            "model-00002-of-00002.safetensors"
        };
        map.insert(k.clone(), shard.into());
        if i % 2 == 0 {
            a.insert(k, v)
        } else {
            b.insert(k, v)
        };
    }
    candle_core::safetensors::save(&a, dir.path().join("model-00001-of-00002.safetensors"))
        .unwrap();
    candle_core::safetensors::save(&b, dir.path().join("model-00002-of-00002.safetensors"))
        .unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();
    let ck = Checkpoint::resolve(&ModelSpec::new(dir.path().display().to_string())).unwrap();
    assert_eq!(ck.weight_files.len(), 2);
    let model = Dinov2::load(&ck, Dinov2Options::default(), &Device::Cpu).unwrap();
    let reference = load("dinov2_tiny.reference.safetensors");
    check(
        "dinov2 sharded",
        &model.embed(&inputs()["images_224"]).unwrap(),
        &reference["torch_hub/images_224"],
    );
}

#[test]
fn hub_cache_layout_resolves_refs_and_shas() {
    let home = tempfile::tempdir().unwrap();
    let cache = hub_cache_dir_from(|k| (k == "HF_HOME").then(|| home.path().into()));
    assert_eq!(cache, home.path().join("hub"));
    let explicit = hub_cache_dir_from(|k| (k == "HF_HUB_CACHE").then(|| "/x/y".into()));
    assert_eq!(explicit, PathBuf::from("/x/y"));

    let sha = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.join("models--facebook--dinov2-tiny");
    let snapshot = repo.join("snapshots").join(sha);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), sha).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixtures().join("dinov2_tiny").join(f), snapshot.join(f)).unwrap();
    }
    assert_eq!(
        resolve_cached("facebook/dinov2-tiny", "main", &cache).unwrap(),
        snapshot
    );
    assert_eq!(
        resolve_cached("facebook/dinov2-tiny", sha, &cache).unwrap(),
        snapshot
    );

    let ck = Checkpoint::resolve_in(&ModelSpec::new("facebook/dinov2-tiny"), &cache).unwrap();
    assert_eq!(ck.revision.as_deref(), Some(sha));
    assert_eq!(ck.model, "facebook/dinov2-tiny");
    assert_eq!(ck.weight_files, vec![snapshot.join("model.safetensors")]);
    let model = Dinov2::load(&ck, Dinov2Options::default(), &Device::Cpu).unwrap();
    assert_eq!(model.dim(), 32);

    // Not cached: a clear message that says how to use a local directory instead.
    for (model, revision) in [
        ("facebook/dinov2-small", None),
        ("facebook/dinov2-tiny", Some("v2")),
    ] {
        let mut spec = ModelSpec::new(model);
        if let Some(r) = revision {
            spec = spec.with_revision(r);
        }
        let err = Checkpoint::resolve_in(&spec, &cache).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::NotCached { .. }), "{msg}");
        assert!(msg.contains(model) && msg.contains("local path"), "{msg}");
    }
}
