//! The `sleep` generator: a stand-in for a slow model, for scheduling benchmarks and cluster tests.
//!
//! It sleeps `ms` milliseconds per image, then writes a tiny solid-colour PNG whose colour is
//! derived from `(prompt_id, seed)`, so every item gets its own image without reading references.
//! Its cost besides the sleep is a few microseconds, so a run's wall time minus `items × ms` is the
//! runner's own overhead.
//!
//! ```yaml
//! adapter: sleep
//! ms: 50        # per image
//! size: 8       # side of the written PNG
//! ```

use std::path::Path;
use std::time::Duration;

use benchmark::expand::PromptFormat;
use image::{Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::compose::encode_png;
use crate::{Error, Generated, GenerationJob, Generator, Identity};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SleepSettings {
    pub ms: u64,
    pub size: u32,
}

impl Default for SleepSettings {
    fn default() -> Self {
        SleepSettings { ms: 50, size: 8 }
    }
}

pub struct Sleep {
    settings: SleepSettings,
}

impl Sleep {
    pub fn new(settings: SleepSettings) -> Result<Sleep, Error> {
        if settings.size == 0 || settings.size > 4096 {
            return Err(Error::Settings {
                adapter: "sleep".into(),
                message: format!("size {} is outside 1..=4096", settings.size),
            });
        }
        Ok(Sleep { settings })
    }
}

/// FNV-1a over the prompt id and the seed: a stable colour per item.
fn colour(job: &GenerationJob) -> Rgb<u8> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in job.prompt_id.bytes().chain(job.seed.to_le_bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let [r, g, b, ..] = hash.to_le_bytes();
    Rgb([r, g, b])
}

impl Generator for Sleep {
    fn identity(&self) -> Identity {
        Identity {
            adapter: "sleep".into(),
            version: "1".into(),
            model: Default::default(),
            settings: serde_json::json!({ "size": self.settings.size }),
        }
    }

    fn prompt_format(&self) -> PromptFormat {
        PromptFormat::TextOnly
    }

    fn generate(&self, job: &GenerationJob, out: &Path) -> Result<Generated, Error> {
        std::thread::sleep(Duration::from_millis(self.settings.ms));
        let size = self.settings.size;
        let image = RgbImage::from_pixel(size, size, colour(job));
        let bytes =
            encode_png(&image).map_err(|e| Error::Other(format!("cannot encode PNG: {e}")))?;
        std::fs::write(out, bytes).map_err(|source| Error::Io {
            path: out.to_owned(),
            source,
        })?;
        Ok(Generated::default())
    }
}

#[cfg(test)]
mod tests {
    use benchmark::Scene;
    use benchmark::expand::ModelPrompt;

    use super::*;

    fn job(prompt_id: &str, seed: u64) -> GenerationJob {
        GenerationJob {
            model: "s".into(),
            prompt_id: prompt_id.into(),
            seed,
            scene: Scene::Neutral,
            subjects: vec![],
            prompt: ModelPrompt {
                format: PromptFormat::TextOnly,
                text: "x".into(),
                references: vec![],
            },
        }
    }

    #[test]
    fn writes_a_distinct_decodable_png_per_item() {
        let tmp = tempfile::tempdir().unwrap();
        let sleep = Sleep::new(SleepSettings { ms: 0, size: 4 }).unwrap();
        let (a, b) = (tmp.path().join("a.png"), tmp.path().join("b.png"));
        sleep.generate(&job("01_no_interaction", 42), &a).unwrap();
        sleep.generate(&job("01_no_interaction", 43), &b).unwrap();
        let a = image::open(&a).unwrap().to_rgb8();
        let b = image::open(&b).unwrap().to_rgb8();
        assert_eq!(a.dimensions(), (4, 4));
        assert_ne!(a.get_pixel(0, 0), b.get_pixel(0, 0));
    }

    #[test]
    fn rejects_a_zero_size() {
        assert!(Sleep::new(SleepSettings { ms: 0, size: 0 }).is_err());
    }
}
