//! The replay generator against MOSAIC's published images.

mod common;

use std::path::PathBuf;

use benchmark::expand::PromptFormat;
use common::*;
use generate::replay::{MetaRecord, Replay, ReplaySettings, meta_mismatches};
use generate::{Error, Generator};

fn replay() -> Replay {
    Replay::new(ReplaySettings { dir: mosaic_dir() }).unwrap()
}

#[test]
fn copies_the_published_image_byte_for_byte() {
    let replay = replay();
    let tmp = tempfile::tempdir().unwrap();
    for seed in [42, 43, 44] {
        let out = tmp.path().join(format!("{seed}.png"));
        let (generated, warnings) = capture_warnings(|| replay.generate(&plaza_job(seed), &out));
        let generated = generated.unwrap();
        assert!(generated.extra.is_empty());
        assert!(warnings.is_empty(), "unexpected warnings: {warnings:?}");
        let source =
            std::fs::read(mosaic_dir().join(format!("01_no_interaction/{seed}.png"))).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), source);
    }
}

#[test]
fn job_inputs_name_the_source_image() {
    let inputs = replay().job_inputs(&plaza_job(43)).unwrap();
    assert_eq!(
        inputs,
        vec![mosaic_dir().join("01_no_interaction").join("43.png")]
    );
    assert!(inputs[0].is_file());
}

#[test]
fn missing_image_names_path_prompt_and_seed() {
    let replay = replay();
    let job = plaza_job(99);
    let expected = mosaic_dir().join("01_no_interaction").join("99.png");
    for result in [
        replay.job_inputs(&job).map(|_| ()),
        replay
            .generate(&job, &tempfile::tempdir().unwrap().path().join("o.png"))
            .map(|_| ()),
    ] {
        let err = result.unwrap_err();
        assert!(
            matches!(&err, Error::MissingImage { path, seed: 99, .. } if *path == expected),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(
            message.contains(&expected.display().to_string()),
            "{message}"
        );
        assert!(
            message.contains("01_no_interaction") && message.contains("99"),
            "{message}"
        );
    }
    let mut job = plaza_job(42);
    job.prompt_id = "99_nowhere".into();
    assert!(matches!(
        replay.job_inputs(&job),
        Err(Error::MissingImage { .. })
    ));
}

#[test]
fn prompt_ids_cannot_leave_the_folder() {
    let mut job = plaza_job(42);
    job.prompt_id = "../mosaic".into();
    assert!(replay().job_inputs(&job).is_err());
}

#[test]
fn meta_mismatch_warns_but_does_not_fail() {
    let replay = replay();
    let tmp = tempfile::tempdir().unwrap();
    let mut job = plaza_job(42);
    job.prompt.text = "Something else entirely.".into();
    job.subjects.reverse();
    let out = tmp.path().join("42.png");
    let (result, warnings) = capture_warnings(|| replay.generate(&job, &out));
    result.unwrap();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(mosaic_dir().join("01_no_interaction/42.png")).unwrap()
    );
    let all = warnings.join("\n");
    assert!(all.contains("meta.json"), "{all}");
    assert!(all.contains("Something else entirely"), "{all}");
    assert!(all.contains("subjects"), "{all}");
}

#[test]
fn every_published_meta_json_parses_and_matches_its_folder() {
    let dir = mosaic_dir();
    let mut folders = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let folder = entry.unwrap().path();
        let text = std::fs::read(folder.join("meta.json")).unwrap();
        let records: Vec<MetaRecord> = serde_json::from_slice(&text).unwrap();
        let id = folder.file_name().unwrap().to_str().unwrap();
        assert_eq!(records.len(), 3, "{id}");
        for r in &records {
            assert_eq!(r.prompt_id.as_deref(), Some(id));
            assert!(folder.join(format!("{}.png", r.seed.unwrap())).is_file());
        }
        folders += 1;
    }
    assert_eq!(folders, 75);
}

#[test]
fn meta_mismatches_lists_the_differences() {
    let text = std::fs::read(mosaic_dir().join("01_no_interaction/meta.json")).unwrap();
    let records: Vec<MetaRecord> = serde_json::from_slice(&text).unwrap();
    assert!(meta_mismatches(&records, &plaza_job(44)).is_empty());
    let mut job = plaza_job(44);
    job.prompt.text.push_str(" Extra.");
    job.subjects.pop();
    let problems = meta_mismatches(&records, &job);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(meta_mismatches(&records, &plaza_job(7)).len(), 1);
}

/// A folder of our own in the paper's layout.
fn scratch(prompt: &str, png: &[u8], meta: Option<&str>) -> (tempfile::TempDir, Replay) {
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join(prompt);
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(folder.join("42.png"), png).unwrap();
    if let Some(meta) = meta {
        std::fs::write(folder.join("meta.json"), meta).unwrap();
    }
    let replay = Replay::new(ReplaySettings {
        dir: tmp.path().to_owned(),
    })
    .unwrap();
    (tmp, replay)
}

#[test]
fn malformed_meta_json_warns_and_absent_meta_is_fine() {
    let png = std::fs::read(mosaic_dir().join("01_no_interaction/42.png")).unwrap();
    let (tmp, replay) = scratch("01_no_interaction", &png, Some("{ not json"));
    let out = tmp.path().join("out.png");
    let (result, warnings) = capture_warnings(|| replay.generate(&plaza_job(42), &out));
    result.unwrap();
    assert!(
        warnings.iter().any(|w| w.contains("meta.json")),
        "{warnings:?}"
    );
    assert_eq!(std::fs::read(&out).unwrap(), png);

    let (tmp, replay) = scratch("01_no_interaction", &png, None);
    let (result, warnings) =
        capture_warnings(|| replay.generate(&plaza_job(42), &tmp.path().join("out.png")));
    result.unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn a_source_that_is_not_a_png_is_a_bad_image() {
    let jpeg = std::fs::read(data().join("val_dataset/dog.jpg")).unwrap();
    let (tmp, replay) = scratch("01_no_interaction", &jpeg, None);
    let err = replay
        .generate(&plaza_job(42), &tmp.path().join("out.png"))
        .unwrap_err();
    assert!(
        matches!(&err, Error::BadImage { path, .. } if path.ends_with("01_no_interaction/42.png")),
        "{err:?}"
    );
}

#[test]
fn identity_does_not_contain_the_folder() {
    let replay = replay();
    let id = replay.identity();
    assert_eq!((id.adapter.as_str(), id.version.as_str()), ("replay", "1"));
    assert!(id.model.is_empty());
    let json = serde_json::to_string(&id).unwrap();
    assert!(
        !json.contains("mosaic") && !json.contains("datasets"),
        "{json}"
    );
    assert_eq!(replay.prompt_format(), PromptFormat::Plain);
}

#[test]
fn settings() {
    let s: ReplaySettings = serde_json::from_str(r#"{"dir": "results/mosaic"}"#).unwrap();
    assert_eq!(s.dir, PathBuf::from("results/mosaic"));
    assert!(serde_json::from_str::<ReplaySettings>(r#"{"dir": "x", "model": "mosaic"}"#).is_err());
    assert!(serde_json::from_str::<ReplaySettings>("{}").is_err());

    let missing = data().join("no/such/folder");
    let err = Replay::new(ReplaySettings {
        dir: missing.clone(),
    })
    .unwrap_err();
    assert!(matches!(err, Error::Settings { .. }));
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
    // A file is not a folder either.
    assert!(
        Replay::new(ReplaySettings {
            dir: data().join("val_dataset/dog.jpg")
        })
        .is_err()
    );
}
