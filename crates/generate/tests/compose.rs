//! The compose generator on real reference images, checked against its own ground truth.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use benchmark::Scene;
use benchmark::expand::PromptFormat;
use common::*;
use generate::compose::{
    Collapse, Compose, ComposeSettings, Status, Truth, load_reference, render,
};
use generate::{Error, GenerationJob, Generator};
use image::{Rgb, RgbImage};

fn compose(collapse: Collapse) -> Compose {
    Compose::new(ComposeSettings {
        collapse,
        ..Default::default()
    })
    .unwrap()
}

/// Generates to a temporary file and returns the PNG bytes, the decoded canvas and the truth.
fn run(generator: &Compose, job: &GenerationJob) -> (Vec<u8>, RgbImage, Truth) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.png");
    let generated = generator.generate(job, &out).unwrap();
    let truth = Truth::from_generated(&generated)
        .expect("truth present")
        .unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let canvas = image::load_from_memory(&bytes).unwrap().into_rgb8();
    (bytes, canvas, truth)
}

fn crop(canvas: &RgbImage, b: [u32; 4]) -> RgbImage {
    image::imageops::crop_imm(canvas, b[0], b[1], b[2] - b[0], b[3] - b[1]).to_image()
}

fn reference_image(job: &GenerationJob, name: &str) -> RgbImage {
    let r = job
        .prompt
        .references
        .iter()
        .find(|r| r.name == name)
        .unwrap();
    load_reference(&r.image, [255, 255, 255]).unwrap()
}

fn mean(image: &RgbImage) -> [f64; 3] {
    let mut sum = [0.0; 3];
    for p in image.pixels() {
        for c in 0..3 {
            sum[c] += f64::from(p[c]);
        }
    }
    sum.map(|s| s / f64::from(image.width() * image.height()))
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    (0..3).map(|c| (a[c] - b[c]).powi(2)).sum::<f64>().sqrt()
}

fn overlap_1d(a0: u32, a1: u32, b0: u32, b1: u32) -> bool {
    a0.max(b0) < a1.min(b1)
}

#[test]
fn deterministic_across_runs_and_instances() {
    for collapse in [
        Collapse::None,
        Collapse::Clone { k: 2 },
        Collapse::Blend { k: 3, alpha: 0.3 },
    ] {
        for scene in Scene::ALL {
            let job = compose_job(6, scene, 42);
            let (a, _, ta) = run(&compose(collapse), &job);
            let (b, _, tb) = run(&compose(collapse), &job);
            assert_eq!(a, b, "{collapse:?} {scene}");
            assert_eq!(ta, tb);
        }
    }
}

#[test]
fn present_subjects_show_their_own_render() {
    let job = compose_job(10, Scene::Neutral, 43);
    let (_, canvas, truth) = run(&compose(Collapse::None), &job);
    assert_eq!(truth.canvas, [512, 512]);
    assert_eq!(truth.scene, Scene::Neutral);
    assert_eq!(truth.subjects.len(), 10);
    for (s, (name, _)) in truth.subjects.iter().zip(SUBJECTS) {
        assert_eq!(s.name, name);
        assert_eq!(s.status, Status::Present);
        assert_eq!(s.shown.as_deref(), Some(name));
        let b = s.bbox.unwrap();
        assert_eq!(
            crop(&canvas, b),
            render(&reference_image(&job, name), b[2] - b[0], b[3] - b[1]),
            "{name}"
        );
    }
}

#[test]
fn boxes_follow_the_scene_geometry() {
    for n in [1, 2, 3, 4, 6, 8, 10] {
        for scene in Scene::ALL {
            let job = compose_job(n, scene, 44);
            let (_, _, truth) = run(&compose(Collapse::None), &job);
            let boxes: Vec<[u32; 4]> = truth.subjects.iter().map(|s| s.bbox.unwrap()).collect();
            for b in &boxes {
                assert!(
                    b[0] < b[2] && b[1] < b[3] && b[2] <= 512 && b[3] <= 512,
                    "{scene} {n}: {b:?}"
                );
                // Not degenerate: at least a tenth of the canvas side.
                assert!(b[2] - b[0] >= 32 && b[3] - b[1] >= 32, "{scene} {n}: {b:?}");
            }
            let mut neighbours = 0;
            for i in 0..n {
                for j in i + 1..n {
                    let (a, b) = (boxes[i], boxes[j]);
                    let same_row = overlap_1d(a[1], a[3], b[1], b[3]);
                    let overlapping = same_row && overlap_1d(a[0], a[2], b[0], b[2]);
                    match scene {
                        Scene::Neutral => assert!(!overlapping, "{n}: {a:?} {b:?}"),
                        Scene::Interaction => assert!(!overlapping, "{n}: {a:?} {b:?}"),
                        Scene::Occlusion => {}
                    }
                    if j == i + 1 && same_row {
                        neighbours += 1;
                        match scene {
                            Scene::Neutral => {
                                assert!(a[2] < b[0], "{n}: gap expected: {a:?} {b:?}")
                            }
                            Scene::Occlusion => {
                                assert_eq!((a[1], a[3]), (b[1], b[3]));
                                assert!(
                                    a[2] > b[0] && a[0] < b[0],
                                    "{n}: overlap expected: {a:?} {b:?}"
                                );
                                let overlap = f64::from(a[2] - b[0]);
                                let narrower = f64::from((a[2] - a[0]).min(b[2] - b[0]));
                                assert!(
                                    (overlap / narrower - 0.3).abs() < 0.05,
                                    "{n}: {a:?} {b:?}"
                                );
                            }
                            Scene::Interaction => {
                                assert_eq!(
                                    (a[1], a[3]),
                                    (b[1], b[3]),
                                    "{n}: same row, same height"
                                );
                                assert_eq!(a[2], b[0], "{n}: touching expected: {a:?} {b:?}");
                            }
                        }
                    } else if scene == Scene::Occlusion && j != i + 1 {
                        // Only direct neighbours overlap.
                        assert!(!overlapping || boxes[i + 1][0] < b[0], "{n}: {a:?} {b:?}");
                    }
                }
            }
            assert_eq!(neighbours > 0, n > 1, "{scene} {n}");
        }
    }
}

#[test]
fn occlusion_draws_later_subjects_on_top() {
    let job = compose_job(2, Scene::Occlusion, 42);
    let (_, canvas, truth) = run(&compose(Collapse::None), &job);
    let second = truth.subjects[1].bbox.unwrap();
    let (w, h) = (second[2] - second[0], second[3] - second[1]);
    assert_eq!(
        crop(&canvas, second),
        render(&reference_image(&job, &truth.subjects[1].name), w, h)
    );
}

#[test]
fn clone_shows_the_source_in_the_slot() {
    let job = compose_job(6, Scene::Neutral, 42);
    let (_, canvas, truth) = run(&compose(Collapse::Clone { k: 2 }), &job);
    let (_, intact_canvas, intact) = run(&compose(Collapse::None), &job);
    let cloned: Vec<_> = truth
        .subjects
        .iter()
        .filter(|s| s.status == Status::Cloned)
        .collect();
    assert_eq!(cloned.len(), 2);
    assert_eq!(
        truth
            .subjects
            .iter()
            .filter(|s| s.status == Status::Present)
            .count(),
        4
    );
    for (s, original) in truth.subjects.iter().zip(&intact.subjects) {
        // Boxes do not depend on the collapse mode.
        assert_eq!(s.bbox, original.bbox);
        let b = s.bbox.unwrap();
        let (w, h) = (b[2] - b[0], b[3] - b[1]);
        let slot = crop(&canvas, b);
        if s.status == Status::Cloned {
            let source = s.source.as_deref().unwrap();
            assert_eq!(s.shown.as_deref(), Some(source));
            assert_ne!(source, s.name);
            let source_truth = truth.subjects.iter().find(|t| t.name == source).unwrap();
            assert_eq!(source_truth.status, Status::Present, "sources are intact");
            let source_render = render(&reference_image(&job, source), w, h);
            assert_eq!(slot, source_render, "{} shows {source}", s.name);
            let own = render(&reference_image(&job, &s.name), w, h);
            assert!(
                distance(mean(&slot), mean(&source_render)) < distance(mean(&slot), mean(&own))
            );
        } else {
            assert_eq!(slot, crop(&intact_canvas, b), "{} unchanged", s.name);
        }
    }
}

#[test]
fn drop_leaves_the_slot_empty() {
    let job = compose_job(4, Scene::Interaction, 43);
    let background = [20, 40, 60];
    let settings = |collapse| ComposeSettings {
        background,
        collapse,
        ..Default::default()
    };
    let (_, canvas, truth) = run(
        &Compose::new(settings(Collapse::Drop { k: 1 })).unwrap(),
        &job,
    );
    let (_, intact_canvas, intact) = run(&Compose::new(settings(Collapse::None)).unwrap(), &job);
    let dropped: Vec<usize> = (0..4)
        .filter(|&i| truth.subjects[i].status == Status::Dropped)
        .collect();
    assert_eq!(dropped.len(), 1);
    let d = dropped[0];
    assert_eq!(truth.subjects[d].bbox, None);
    assert_eq!(truth.subjects[d].shown, None);
    let slot = crop(&canvas, intact.subjects[d].bbox.unwrap());
    assert!(slot.pixels().all(|p| *p == Rgb(background)));
    for i in (0..4).filter(|&i| i != d) {
        let b = truth.subjects[i].bbox.unwrap();
        assert_eq!(crop(&canvas, b), crop(&intact_canvas, b));
    }
    // Dropping everyone leaves a blank canvas.
    let (_, blank, truth) = run(
        &Compose::new(settings(Collapse::Drop { k: 4 })).unwrap(),
        &job,
    );
    assert!(truth.subjects.iter().all(|s| s.status == Status::Dropped));
    assert!(blank.pixels().all(|p| *p == Rgb(background)));
}

#[test]
fn blend_interpolates_between_none_and_clone() {
    let job = compose_job(8, Scene::Neutral, 44);
    let (_, none, _) = run(&compose(Collapse::None), &job);
    let (_, zero, truth0) = run(&compose(Collapse::Blend { k: 3, alpha: 0.0 }), &job);
    assert_eq!(zero, none, "alpha 0 changes no pixel");
    assert_eq!(
        truth0
            .subjects
            .iter()
            .filter(|s| s.status == Status::Blended)
            .count(),
        3
    );
    assert!(
        truth0
            .subjects
            .iter()
            .filter(|s| s.status == Status::Blended)
            .all(|s| s.shown.as_ref() == Some(&s.name))
    );

    let (_, clone, clone_truth) = run(&compose(Collapse::Clone { k: 3 }), &job);
    let (_, one, truth1) = run(&compose(Collapse::Blend { k: 3, alpha: 1.0 }), &job);
    assert_eq!(one, clone, "alpha 1 is a clone of the same source");
    for (b, c) in truth1.subjects.iter().zip(&clone_truth.subjects) {
        assert_eq!(b.source, c.source);
        assert_eq!(b.shown, c.shown);
    }

    let (_, half, truth) = run(&compose(Collapse::Blend { k: 3, alpha: 0.5 }), &job);
    for s in truth
        .subjects
        .iter()
        .filter(|s| s.status == Status::Blended)
    {
        assert_eq!(s.alpha, Some(0.5));
        let b = s.bbox.unwrap();
        let (m, m0, m1) = (
            mean(&crop(&half, b)),
            mean(&crop(&none, b)),
            mean(&crop(&clone, b)),
        );
        for c in 0..3 {
            assert!(
                (m[c] - (m0[c] + m1[c]) / 2.0).abs() < 1.0,
                "{}: {m:?} {m0:?} {m1:?}",
                s.name
            );
        }
    }
}

#[test]
fn too_large_k_is_a_settings_error_naming_the_job() {
    let job = compose_job(4, Scene::Neutral, 42);
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.png");
    for collapse in [
        Collapse::Clone { k: 4 },
        Collapse::Blend { k: 4, alpha: 0.5 },
        Collapse::Drop { k: 5 },
    ] {
        let err = compose(collapse).generate(&job, &out).unwrap_err();
        assert!(matches!(err, Error::Settings { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains("04_no_interaction") && message.contains("42"),
            "{message}"
        );
    }
    assert!(
        compose(Collapse::Clone { k: 3 })
            .generate(&job, &out)
            .is_ok()
    );
}

#[test]
fn settings_are_validated() {
    let bad_alpha = Compose::new(ComposeSettings {
        collapse: Collapse::Blend { k: 1, alpha: 1.5 },
        ..Default::default()
    });
    assert!(matches!(bad_alpha, Err(Error::Settings { .. })));
    let nan = Compose::new(ComposeSettings {
        collapse: Collapse::Blend {
            k: 1,
            alpha: f32::NAN,
        },
        ..Default::default()
    });
    assert!(nan.is_err());
    assert!(
        Compose::new(ComposeSettings {
            size: 4,
            ..Default::default()
        })
        .is_err()
    );
}

#[test]
fn settings_deserialize_with_defaults_and_reject_unknown_keys() {
    let s: ComposeSettings = serde_json::from_str("{}").unwrap();
    assert_eq!(s, ComposeSettings::default());
    assert_eq!(
        (s.size, s.background, s.collapse, s.delay_ms),
        (512, [255, 255, 255], Collapse::None, 0)
    );
    let s: ComposeSettings = serde_json::from_str(
        r#"{"size": 256, "collapse": {"mode": "blend", "k": 2, "alpha": 0.25}, "delay_ms": 5}"#,
    )
    .unwrap();
    assert_eq!(s.collapse, Collapse::Blend { k: 2, alpha: 0.25 });
    let s: ComposeSettings =
        serde_json::from_str(r#"{"collapse": {"mode": "drop", "k": 1}}"#).unwrap();
    assert_eq!(s.collapse, Collapse::Drop { k: 1 });
    for bad in [
        r#"{"colour": [0, 0, 0]}"#,
        r#"{"collapse": {"mode": "clone", "k": 1, "source": 2}}"#,
        r#"{"collapse": {"mode": "melt", "k": 1}}"#,
        r#"{"collapse": {"mode": "clone"}}"#,
        r#"{"background": [0, 0]}"#,
    ] {
        assert!(
            serde_json::from_str::<ComposeSettings>(bad).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn identity_holds_the_output_settings() {
    let generator = Compose::new(ComposeSettings {
        collapse: Collapse::Clone { k: 1 },
        delay_ms: 7,
        ..Default::default()
    })
    .unwrap();
    let id = generator.identity();
    assert_eq!((id.adapter.as_str(), id.version.as_str()), ("compose", "1"));
    assert_eq!(
        id.settings,
        serde_json::json!({"size": 512, "background": [255, 255, 255], "collapse": {"mode": "clone", "k": 1}})
    );
    // Latency does not change the output, so it does not change the identity.
    assert_eq!(compose(Collapse::Clone { k: 1 }).identity(), id);
    assert_ne!(compose(Collapse::Clone { k: 2 }).identity(), id);
    assert_eq!(generator.prompt_format(), PromptFormat::Plain);
    assert_eq!(
        generator
            .job_inputs(&compose_job(2, Scene::Neutral, 1))
            .unwrap(),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn identity_writes_alpha_as_written() {
    let id = compose(Collapse::Blend { k: 1, alpha: 0.3 }).identity();
    assert_eq!(
        id.settings["collapse"],
        serde_json::json!({"mode": "blend", "k": 1, "alpha": 0.3})
    );
    let next = f32::from_bits(0.3f32.to_bits() + 1);
    assert_ne!(
        compose(Collapse::Blend { k: 1, alpha: next }).identity(),
        id
    );
}

/// FNV-1a of the canvas pixels: pins the output. If this changes (new resampler, layout, PRNG or a
/// decoder upgrade that changes decoded pixels), bump `Compose`'s identity version.
#[test]
fn output_is_pinned() {
    fn fnv(bytes: &[u8]) -> u64 {
        bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
    let mut hashes = Vec::new();
    for (scene, collapse) in [
        (Scene::Neutral, Collapse::None),
        (Scene::Occlusion, Collapse::Clone { k: 2 }),
        (Scene::Interaction, Collapse::Blend { k: 1, alpha: 0.4 }),
    ] {
        let job = compose_job(5, scene, 42);
        let (canvas, truth) = compose(collapse).compose(&job).unwrap();
        let boxes: Vec<_> = truth
            .subjects
            .iter()
            .map(|s| (s.status, s.shown.clone(), s.bbox))
            .collect();
        hashes.push((format!("{:016x}", fnv(canvas.as_raw())), boxes));
    }
    let present = |name: &str, b: [u32; 4]| (Status::Present, Some(name.to_string()), Some(b));
    let other = |status, name: &str, b: [u32; 4]| (status, Some(name.to_string()), Some(b));
    let expected = vec![
        (
            "4900a81946d718af".to_string(),
            vec![
                present("black woman", [32, 70, 171, 209]),
                present("western woman", [187, 70, 325, 209]),
                present("dog", [341, 70, 480, 209]),
                present("Siamese cat", [54, 264, 225, 480]),
                present("bowl", [241, 264, 457, 480]),
            ],
        ),
        (
            "41785adacefdcee1".to_string(),
            vec![
                other(Status::Cloned, "western woman", [32, 46, 219, 233]),
                present("western woman", [163, 46, 349, 233]),
                other(Status::Cloned, "Siamese cat", [293, 46, 480, 233]),
                present("Siamese cat", [88, 264, 259, 480]),
                present("bowl", [208, 264, 424, 480]),
            ],
        ),
        (
            "921dc495e9adb006".to_string(),
            vec![
                present("black woman", [33, 65, 182, 214]),
                present("western woman", [182, 65, 330, 214]),
                present("dog", [330, 65, 479, 214]),
                other(Status::Blended, "Siamese cat", [62, 264, 233, 480]),
                present("bowl", [233, 264, 449, 480]),
            ],
        ),
    ];
    assert_eq!(
        hashes, expected,
        "compose output changed: bump its identity version and update the pins"
    );
}

#[test]
fn truth_json_shape() {
    let job = compose_job(3, Scene::Neutral, 42);
    let generator = compose(Collapse::Blend { k: 1, alpha: 0.75 });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("o.png");
    let generated = generator.generate(&job, &out).unwrap();
    let truth = &generated.extra["truth"];
    assert_eq!(truth["canvas"], serde_json::json!([512, 512]));
    assert_eq!(truth["scene"], "neutral");
    let subjects = truth["subjects"].as_array().unwrap();
    assert_eq!(subjects.len(), 3);
    let blended = subjects.iter().find(|s| s["status"] == "blended").unwrap();
    assert_eq!(blended["alpha"], 0.75);
    assert_eq!(blended["shown"], blended["source"]);
    assert_eq!(blended["box"].as_array().unwrap().len(), 4);
    let present = subjects.iter().find(|s| s["status"] == "present").unwrap();
    assert!(present.get("alpha").is_none());
    assert_eq!(present["shown"], present["name"]);

    let (_, _, dropped) = run(&compose(Collapse::Drop { k: 1 }), &job);
    let json = serde_json::to_value(&dropped).unwrap();
    let d = json["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "dropped")
        .unwrap();
    assert!(d["box"].is_null() && d["shown"].is_null());
}

#[test]
fn transparent_references_are_composited_over_the_background() {
    // A 2×1 RGBA image: one opaque grey pixel, one fully transparent black one, one half transparent.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("t.png");
    image::RgbaImage::from_raw(3, 1, vec![100, 100, 100, 255, 0, 0, 0, 0, 0, 0, 0, 128])
        .unwrap()
        .save(&path)
        .unwrap();
    let on_red = load_reference(&path, [255, 0, 0]).unwrap();
    assert_eq!(on_red.as_raw(), &[100, 100, 100, 255, 0, 0, 127, 0, 0]);
    // bowl.png is stored as RGBA.
    let bowl = load_reference(&reference("bowl", "bowl.png").image, [255, 0, 0]).unwrap();
    assert_eq!(bowl.dimensions(), (540, 540));
    assert!(matches!(
        load_reference(Path::new("/no/such.png"), [0; 3]),
        Err(Error::Io { .. })
    ));
    let not_image = data().join("val_dataset/prompts_50.txt");
    assert!(matches!(
        load_reference(&not_image, [0; 3]),
        Err(Error::BadImage { .. })
    ));
}

#[test]
fn missing_references_fail() {
    let mut job = compose_job(2, Scene::Neutral, 42);
    job.prompt.references[1].image = data().join("val_dataset/nope.jpg");
    let tmp = tempfile::tempdir().unwrap();
    let err = compose(Collapse::None)
        .generate(&job, &tmp.path().join("o.png"))
        .unwrap_err();
    assert!(err.to_string().contains("nope.jpg"), "{err}");
    job.prompt.references.clear();
    assert!(compose(Collapse::None).compose(&job).is_err());
}

#[test]
fn delay_is_slept() {
    let generator = Compose::new(ComposeSettings {
        delay_ms: 60,
        size: 64,
        ..Default::default()
    })
    .unwrap();
    let start = Instant::now();
    run(&generator, &compose_job(2, Scene::Neutral, 42));
    assert!(start.elapsed() >= Duration::from_millis(60));
}
