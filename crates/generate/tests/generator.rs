//! The `Generator` trait as the pipeline uses it: boxed, shared between threads.

mod common;

use std::sync::Arc;

use benchmark::Scene;
use common::*;
use generate::compose::{Compose, ComposeSettings};
use generate::replay::{Replay, ReplaySettings};
use generate::{GenerationJob, Generator};

fn generators() -> Vec<Box<dyn Generator>> {
    vec![
        Box::new(Replay::new(ReplaySettings { dir: mosaic_dir() }).unwrap()),
        Box::new(Compose::new(ComposeSettings::default()).unwrap()),
    ]
}

#[test]
fn generators_are_object_safe() {
    let job = plaza_job(42);
    let tmp = tempfile::tempdir().unwrap();
    for (i, generator) in generators().iter().enumerate() {
        let identity = generator.identity();
        let inputs = generator.job_inputs(&job).unwrap();
        let out = tmp.path().join(format!("{i}.png"));
        let generated = generator.generate(&job, &out).unwrap();
        let png = image::open(&out).unwrap();
        assert_eq!(
            (png.width(), png.height()),
            (512, 512),
            "{}",
            identity.adapter
        );
        match identity.adapter.as_str() {
            "replay" => assert_eq!(inputs.len(), 1),
            "compose" => assert!(inputs.is_empty() && generated.extra.contains_key("truth")),
            other => panic!("{other}"),
        }
    }
}

#[test]
fn generate_runs_concurrently() {
    let job: GenerationJob = compose_job(4, Scene::Occlusion, 43);
    let tmp = tempfile::tempdir().unwrap();
    for generator in generators().into_iter().map(Arc::<dyn Generator>::from) {
        let job = if generator.identity().adapter == "replay" {
            plaza_job(43)
        } else {
            job.clone()
        };
        let outputs: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|t| {
                    let (generator, job) = (generator.clone(), job.clone());
                    let out = tmp
                        .path()
                        .join(format!("{}-{t}.png", generator.identity().adapter));
                    scope.spawn(move || {
                        generator.generate(&job, &out).unwrap();
                        std::fs::read(&out).unwrap()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(outputs.windows(2).all(|w| w[0] == w[1]));
    }
}
