//! Shared helpers: the p13n-workshop data set and hand-built jobs.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use benchmark::Scene;
use benchmark::expand::{ModelPrompt, PromptFormat, Reference};
use generate::GenerationJob;

pub const DATA: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/datasets/p13n-workshop"
);

pub fn data() -> PathBuf {
    PathBuf::from(DATA)
}

pub fn mosaic_dir() -> PathBuf {
    data().join("results/mosaic")
}

/// Ten reference subjects of mixed aspect ratios, one with transparency (`bowl.png`).
pub const SUBJECTS: [(&str, &str); 10] = [
    ("black woman", "black_women.jpg"),
    ("western woman", "western_woman.jpg"),
    ("dog", "dog.jpg"),
    ("Siamese cat", "Siamese cat.jpg"),
    ("bowl", "bowl.png"),
    ("guitar", "guitar.jpg"),
    ("hat", "hat.jpg"),
    ("panda", "panda.jpg"),
    ("clock", "clock.jpg"),
    ("vintage camera", "vintage camera.jpg"),
];

pub fn reference(name: &str, file: &str) -> Reference {
    Reference {
        name: name.into(),
        image: data().join("val_dataset").join(file),
        caption: name.into(),
        idip: true,
    }
}

pub fn job(
    prompt_id: &str,
    seed: u64,
    scene: Scene,
    text: &str,
    subjects: &[(&str, &str)],
) -> GenerationJob {
    GenerationJob {
        model: "test-model".into(),
        prompt_id: prompt_id.into(),
        seed,
        scene,
        subjects: subjects.iter().map(|(n, _)| n.to_string()).collect(),
        prompt: ModelPrompt {
            format: PromptFormat::Plain,
            text: text.into(),
            references: subjects.iter().map(|(n, f)| reference(n, f)).collect(),
        },
    }
}

/// A job over the first `n` of [`SUBJECTS`].
pub fn compose_job(n: usize, scene: Scene, seed: u64) -> GenerationJob {
    let id = format!("{:02}_{}", n, scene.id_suffix());
    job(&id, seed, scene, "a synthetic scene", &SUBJECTS[..n])
}

/// The paper's first prompt, as its meta.json records it.
pub fn plaza_job(seed: u64) -> GenerationJob {
    job(
        "01_no_interaction",
        seed,
        Scene::Neutral,
        "An open plaza at noon: a black woman standing near a fountain, and a western woman reading a phone beside her.",
        &[
            ("black woman", "black_women.jpg"),
            ("western woman", "western_woman.jpg"),
        ],
    )
}

/// A minimal tracing subscriber that records the warnings emitted while `f` runs.
pub fn capture_warnings<R>(f: impl FnOnce() -> R) -> (R, Vec<String>) {
    let warnings = Arc::new(Mutex::new(Vec::new()));
    let subscriber = Capture(warnings.clone());
    let result = tracing::subscriber::with_default(subscriber, f);
    let warnings = warnings.lock().unwrap().clone();
    (result, warnings)
}

struct Capture(Arc<Mutex<Vec<String>>>);

struct Fields(String);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if *event.metadata().level() == tracing::Level::WARN {
            let mut fields = Fields(String::new());
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}
