//! Aggregation of [`ImageScores`] into a [`Summary`].
//!
//! Following the paper, a cell's value for a [`Metric`] is the plain mean over the cell's scored
//! images. Cells are, per model: all images, each subject count N, each scene, and each N × scene.
//! Every [`Stat`] carries a percentile-bootstrap interval ([`Bootstrap`]) that resamples the cell's
//! prompts, not its images: the seeds of one prompt share the prompt and stay together. Failed
//! images count in their cells' `failed`, are listed in [`Summary::failed`], and enter no mean.
//!
//! The [`Summary`] is the single input of every writer in [`crate::report`] and
//! [`crate::figures`]; it also holds per-prompt means ([`PromptPoint`]) for the scatter figure.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use benchmark::Scene;
use serde::{Deserialize, Serialize};

use crate::bootstrap::{Bootstrap, Rng, quantile};
use crate::error::Error;
use crate::record::{ImageScores, Metrics};

/// A reported quantity.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Metric {
    ClipT,
    ClipI,
    Dino,
    Dinov2,
    /// SCR at the threshold written as in [`Metrics::scr`].
    Scr(String),
    /// Per-subject (local) SCR at the threshold written as in [`Metrics::local_scr`].
    LocalScr(String),
    /// [`Metrics::homogenisation`].
    Homogenisation,
    /// [`Metrics::same_instance`].
    SameInstance,
}

impl Metric {
    /// The four similarity metrics, in the paper's order.
    pub const SIMILARITIES: [Metric; 4] =
        [Metric::ClipT, Metric::ClipI, Metric::Dino, Metric::Dinov2];

    /// SCR at `tau` (written as in [`Metrics::scr`]).
    pub fn scr(tau: &str) -> Metric {
        Metric::Scr(tau.to_owned())
    }

    /// This metric's value for one image.
    pub fn of(&self, metrics: &Metrics) -> Option<f64> {
        match self {
            Metric::ClipT => metrics.clip_t,
            Metric::ClipI => metrics.clip_i,
            Metric::Dino => metrics.dino,
            Metric::Dinov2 => metrics.dinov2,
            Metric::Scr(tau) => metrics.scr.get(tau).copied(),
            Metric::LocalScr(tau) => metrics.local_scr.get(tau).copied(),
            Metric::Homogenisation => metrics.homogenisation,
            Metric::SameInstance => metrics.same_instance,
        }
    }

    /// Whether the value is a share, printed as a percentage (global and local SCR).
    pub fn is_rate(&self) -> bool {
        matches!(self, Metric::Scr(_) | Metric::LocalScr(_))
    }

    /// The paper's name: `CLIP-T`, `CLIP-I`, `DINO`, `DINOv2`, `SCR@0.4`; and ours:
    /// `local SCR@0.4`, `homogenisation`, `same-instance`.
    pub fn title(&self) -> String {
        match self {
            Metric::ClipT => "CLIP-T".into(),
            Metric::ClipI => "CLIP-I".into(),
            Metric::Dino => "DINO".into(),
            Metric::Dinov2 => "DINOv2".into(),
            Metric::Scr(tau) => format!("SCR@{tau}"),
            Metric::LocalScr(tau) => format!("local SCR@{tau}"),
            Metric::Homogenisation => "homogenisation".into(),
            Metric::SameInstance => "same-instance".into(),
        }
    }
}

/// Column name: `clip_t`, `clip_i`, `dino`, `dinov2`, `scr@0.4`, `local_scr@0.4`,
/// `homogenisation`, `same_instance`.
impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::ClipT => f.write_str("clip_t"),
            Metric::ClipI => f.write_str("clip_i"),
            Metric::Dino => f.write_str("dino"),
            Metric::Dinov2 => f.write_str("dinov2"),
            Metric::Scr(tau) => write!(f, "scr@{tau}"),
            Metric::LocalScr(tau) => write!(f, "local_scr@{tau}"),
            Metric::Homogenisation => f.write_str("homogenisation"),
            Metric::SameInstance => f.write_str("same_instance"),
        }
    }
}

impl From<Metric> for String {
    fn from(metric: Metric) -> String {
        metric.to_string()
    }
}

impl TryFrom<String> for Metric {
    type Error = String;
    fn try_from(name: String) -> Result<Metric, String> {
        match name.as_str() {
            "clip_t" => Ok(Metric::ClipT),
            "clip_i" => Ok(Metric::ClipI),
            "dino" => Ok(Metric::Dino),
            "dinov2" => Ok(Metric::Dinov2),
            "homogenisation" => Ok(Metric::Homogenisation),
            "same_instance" => Ok(Metric::SameInstance),
            _ => match (name.strip_prefix("scr@"), name.strip_prefix("local_scr@")) {
                (Some(tau), _) => Ok(Metric::scr(tau)),
                (_, Some(tau)) => Ok(Metric::LocalScr(tau.to_owned())),
                _ => Err(format!("unknown metric {name:?}")),
            },
        }
    }
}

/// Mean of one metric over a cell's images, with its bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Images that have this metric.
    pub n: usize,
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// One aggregate cell: a model, optionally restricted to a subject count and/or a scene.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub model: String,
    /// `None`: all subject counts.
    pub subject_count: Option<usize>,
    /// `None`: all scenes.
    pub scene: Option<Scene>,
    /// Scored images.
    pub images: usize,
    /// Prompts with at least one scored image (the bootstrap's units).
    pub prompts: usize,
    /// Failed images.
    pub failed: usize,
    pub stats: BTreeMap<Metric, Stat>,
}

impl Cell {
    pub fn stat(&self, metric: &Metric) -> Option<&Stat> {
        self.stats.get(metric)
    }

    /// `model|N|scene` with `all` for an unrestricted dimension; also seeds the cell's bootstrap.
    pub fn label(&self) -> String {
        let count = self.subject_count.map_or("all".into(), |n| n.to_string());
        let scene = self.scene.map_or("all".into(), |s| s.to_string());
        format!("{}|{count}|{scene}", self.model)
    }
}

/// Means of one model's images of one prompt (over its seeds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptPoint {
    pub model: String,
    pub prompt_id: String,
    pub subject_count: usize,
    pub scene: Scene,
    pub images: usize,
    pub means: BTreeMap<Metric, f64>,
}

/// An image that could not be scored, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub model: String,
    pub prompt_id: String,
    pub seed: u64,
    pub error: String,
}

/// Everything the reports show, computed once from the per-image scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Models in order of first appearance in the input.
    pub models: Vec<String>,
    /// Subject counts present, ascending.
    pub subject_counts: Vec<usize>,
    /// SCR thresholds present, ascending.
    pub thresholds: Vec<String>,
    /// Local (per-subject) SCR thresholds present, ascending; empty without detection.
    #[serde(default)]
    pub local_thresholds: Vec<String>,
    pub bootstrap: Bootstrap,
    /// Per model: all, each N, each scene, each N × scene.
    pub cells: Vec<Cell>,
    pub prompts: Vec<PromptPoint>,
    /// Sorted by model, prompt id, seed.
    pub failed: Vec<Failed>,
    /// What each model really is, where its generator says (`provenance.label` of its images),
    /// e.g. "FLUX.1-dev, text only, as run in the paper (not PSR)".
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Summary {
    /// The metrics reported: the four similarities, SCR at each threshold, then (with detection)
    /// local SCR at each threshold, homogenisation and same-instance.
    pub fn metrics(&self) -> Vec<Metric> {
        metrics(&self.thresholds, &self.local_thresholds)
    }

    /// Whether any image has local (detection-aware) scores.
    pub fn has_local(&self) -> bool {
        !self.local_thresholds.is_empty()
    }

    pub fn cell(
        &self,
        model: &str,
        subject_count: Option<usize>,
        scene: Option<Scene>,
    ) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|c| c.model == model && c.subject_count == subject_count && c.scene == scene)
    }

    /// The threshold of the headline SCR: 0.4 (the paper's Table 1) when present.
    pub fn headline_tau(&self) -> Option<&str> {
        let tau = self.thresholds.iter().find(|t| t.as_str() == "0.4");
        tau.or(self.thresholds.first()).map(String::as_str)
    }
}

fn metrics(thresholds: &[String], local_thresholds: &[String]) -> Vec<Metric> {
    let scr = thresholds.iter().map(|t| Metric::scr(t));
    let local = local_thresholds
        .iter()
        .map(|t| Metric::LocalScr(t.clone()))
        .chain(
            (!local_thresholds.is_empty())
                .then_some([Metric::Homogenisation, Metric::SameInstance])
                .into_iter()
                .flatten(),
        );
    Metric::SIMILARITIES
        .into_iter()
        .chain(scr)
        .chain(local)
        .collect()
}

/// The thresholds used as keys in `scores`, ascending by value.
fn sorted_thresholds<'a>(keys: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut thresholds: Vec<String> = keys.cloned().collect::<BTreeSet<_>>().into_iter().collect();
    thresholds.sort_by(|a, b| {
        let num = |t: &str| t.parse::<f64>().unwrap_or(f64::INFINITY);
        num(a).total_cmp(&num(b)).then_with(|| a.cmp(b))
    });
    thresholds
}

/// Aggregates per-image scores; an image listed twice (same model, prompt and seed) is an error.
pub fn aggregate(scores: &[ImageScores], bootstrap: &Bootstrap) -> Result<Summary, Error> {
    let mut seen = BTreeSet::new();
    for s in scores {
        if !seen.insert(s.sort_key()) {
            return Err(Error::Duplicate {
                model: s.model.clone(),
                prompt_id: s.prompt_id.clone(),
                seed: s.seed,
            });
        }
    }
    let mut models: Vec<String> = Vec::new();
    for s in scores {
        if !models.contains(&s.model) {
            models.push(s.model.clone());
        }
    }
    let subject_counts: Vec<usize> = scores
        .iter()
        .map(|s| s.subject_count)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let thresholds = sorted_thresholds(scores.iter().flat_map(|s| s.metrics.scr.keys()));
    let local_thresholds =
        sorted_thresholds(scores.iter().flat_map(|s| s.metrics.local_scr.keys()));
    let metrics = metrics(&thresholds, &local_thresholds);
    let mut groups: Vec<(Option<usize>, Option<Scene>)> = vec![(None, None)];
    groups.extend(subject_counts.iter().map(|&n| (Some(n), None)));
    groups.extend(Scene::ALL.map(|scene| (None, Some(scene))));
    for &n in &subject_counts {
        groups.extend(Scene::ALL.map(|scene| (Some(n), Some(scene))));
    }

    let mut sorted: Vec<&ImageScores> = scores.iter().collect();
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));

    let mut cells = Vec::new();
    let mut prompts = Vec::new();
    for model in &models {
        let images: Vec<&ImageScores> = sorted
            .iter()
            .copied()
            .filter(|s| &s.model == model)
            .collect();
        for &(subject_count, scene) in &groups {
            let members: Vec<&ImageScores> = images
                .iter()
                .copied()
                .filter(|s| subject_count.is_none_or(|n| s.subject_count == n))
                .filter(|s| scene.is_none_or(|sc| s.scene == sc))
                .collect();
            if !members.is_empty() {
                cells.push(cell(
                    model,
                    subject_count,
                    scene,
                    &members,
                    &metrics,
                    bootstrap,
                ));
            }
        }
        prompts.extend(prompt_points(model, &images, &metrics));
    }
    let labels = sorted
        .iter()
        .filter_map(|s| {
            let label = s.provenance.get("label")?.as_str()?;
            Some((s.model.clone(), label.to_owned()))
        })
        .collect();
    let failed = sorted
        .iter()
        .filter_map(|s| {
            Some(Failed {
                model: s.model.clone(),
                prompt_id: s.prompt_id.clone(),
                seed: s.seed,
                error: s.error.clone()?,
            })
        })
        .collect();
    Ok(Summary {
        models,
        subject_counts,
        thresholds,
        local_thresholds,
        bootstrap: *bootstrap,
        cells,
        prompts,
        failed,
        labels,
    })
}

/// One prompt's scored images within a cell: per metric, the sum of values and how many images
/// have it.
struct PromptSums<'a> {
    first: &'a ImageScores,
    images: usize,
    sums: Vec<(f64, usize)>,
}

/// Sums per prompt, sorted by prompt id.
fn prompt_sums<'a>(images: &[&'a ImageScores], metrics: &[Metric]) -> Vec<PromptSums<'a>> {
    let mut by_prompt: BTreeMap<&str, PromptSums<'a>> = BTreeMap::new();
    for &image in images.iter().filter(|s| !s.is_failed()) {
        let prompt = by_prompt
            .entry(&image.prompt_id)
            .or_insert_with(|| PromptSums {
                first: image,
                images: 0,
                sums: vec![(0.0, 0); metrics.len()],
            });
        prompt.images += 1;
        for (metric, (sum, n)) in metrics.iter().zip(&mut prompt.sums) {
            if let Some(v) = metric.of(&image.metrics) {
                *sum += v;
                *n += 1;
            }
        }
    }
    by_prompt.into_values().collect()
}

fn cell(
    model: &str,
    subject_count: Option<usize>,
    scene: Option<Scene>,
    members: &[&ImageScores],
    metrics: &[Metric],
    bootstrap: &Bootstrap,
) -> Cell {
    let sums: Vec<Vec<(f64, usize)>> = prompt_sums(members, metrics)
        .into_iter()
        .map(|p| p.sums)
        .collect();
    let mut cell = Cell {
        model: model.to_owned(),
        subject_count,
        scene,
        images: members.iter().filter(|s| !s.is_failed()).count(),
        prompts: sums.len(),
        failed: members.iter().filter(|s| s.is_failed()).count(),
        stats: BTreeMap::new(),
    };
    let intervals = intervals(&sums, metrics.len(), bootstrap, &cell.label());
    for (m, metric) in metrics.iter().enumerate() {
        let (sum, n) = sums
            .iter()
            .fold((0.0, 0), |(s, n), p| (s + p[m].0, n + p[m].1));
        if n > 0 {
            let (lo, hi) = intervals[m];
            let mean = sum / n as f64;
            cell.stats.insert(metric.clone(), Stat { n, mean, lo, hi });
        }
    }
    cell
}

/// Percentile-bootstrap bounds per metric, resampling prompts with replacement.
fn intervals(
    sums: &[Vec<(f64, usize)>],
    metric_count: usize,
    bootstrap: &Bootstrap,
    label: &str,
) -> Vec<(f64, f64)> {
    let mut rng = Rng::for_label(bootstrap.seed, label);
    let mut replicates = vec![Vec::with_capacity(bootstrap.resamples); metric_count];
    let mut totals = vec![(0.0f64, 0usize); metric_count];
    if !sums.is_empty() {
        for _ in 0..bootstrap.resamples {
            totals.fill((0.0, 0));
            for _ in 0..sums.len() {
                let prompt = &sums[rng.below(sums.len())];
                for ((sum, n), &(s, k)) in totals.iter_mut().zip(prompt) {
                    *sum += s;
                    *n += k;
                }
            }
            for (reps, &(sum, n)) in replicates.iter_mut().zip(&totals) {
                if n > 0 {
                    reps.push(sum / n as f64);
                }
            }
        }
    }
    let tail = (1.0 - bootstrap.level) / 2.0;
    replicates
        .into_iter()
        .map(|mut reps| {
            reps.sort_by(f64::total_cmp);
            match (quantile(&reps, tail), quantile(&reps, 1.0 - tail)) {
                (Some(lo), Some(hi)) => (lo, hi),
                _ => (f64::NAN, f64::NAN),
            }
        })
        .collect()
}

fn prompt_points(model: &str, images: &[&ImageScores], metrics: &[Metric]) -> Vec<PromptPoint> {
    prompt_sums(images, metrics)
        .into_iter()
        .map(|p| PromptPoint {
            model: model.to_owned(),
            prompt_id: p.first.prompt_id.clone(),
            subject_count: p.first.subject_count,
            scene: p.first.scene,
            images: p.images,
            means: metrics
                .iter()
                .zip(&p.sums)
                .filter(|(_, (_, n))| *n > 0)
                .map(|(m, &(s, n))| (m.clone(), s / n as f64))
                .collect(),
        })
        .collect()
}
