//! The paper's metrics (DESIGN §1, `scripts/eval.py`) on embeddings.
//!
//! [`Embeddings`] holds what each configured encoder produced for one image; the generated image
//! is compared with its N [`Reference`]s by [`score_image`], giving [`Metrics`]:
//!
//! - `clip_t = cos(CLIP(gen), CLIP_text(prompt))`
//! - `clip_i = mean_i cos(CLIP(gen), CLIP(ref_i))`, likewise `dino` and `dinov2`
//! - `scr@τ = (1/N) Σ_i 1[cos(DINOv2(gen), DINOv2(ref_i)) < τ]`
//!
//! Inputs are `f32` as encoders produce them; every sum is accumulated in `f64`. A metric is
//! `Some` exactly when its encoder's embedding is present for the generated image (and the prompt
//! text, for CLIP-T); an embedding present on one side only is an error, never a silent gap. SCR
//! needs DINOv2 and is never computed from another encoder.

use crate::error::MetricError;
use crate::record::{Metrics, SubjectScores, tau_key};

/// One image's embeddings; `None` where that encoder is not configured.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Embeddings {
    pub clip: Option<Vec<f32>>,
    pub dino: Option<Vec<f32>>,
    pub dinov2: Option<Vec<f32>>,
}

/// A reference subject: its name (for [`SubjectScores`]) and its image's embeddings.
#[derive(Clone, Copy, Debug)]
pub struct Reference<'a> {
    pub name: &'a str,
    pub embeddings: &'a Embeddings,
}

/// Cosine similarity of the L2-normalised vectors, accumulated in `f64`.
pub fn cosine(a: &[f32], b: &[f32]) -> Result<f64, MetricError> {
    cosine_of("vector", a, b)
}

fn cosine_of(encoder: &'static str, a: &[f32], b: &[f32]) -> Result<f64, MetricError> {
    if a.len() != b.len() {
        return Err(MetricError::Dimension {
            encoder,
            left: a.len(),
            right: b.len(),
        });
    }
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        aa += x * x;
        bb += y * y;
    }
    for (norm, what) in [(aa, "the left vector"), (bb, "the right vector")] {
        if !(norm > 0.0 && norm.is_finite()) {
            return Err(MetricError::Degenerate {
                encoder,
                what: what.into(),
            });
        }
    }
    Ok(dot / (aa.sqrt() * bb.sqrt()))
}

/// `vector` if it can be normalised, else an error naming it.
fn usable<'v>(
    encoder: &'static str,
    vector: &'v [f32],
    what: impl FnOnce() -> String,
) -> Result<&'v [f32], MetricError> {
    let norm: f64 = vector.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    if norm > 0.0 && norm.is_finite() {
        Ok(vector)
    } else {
        Err(MetricError::Degenerate {
            encoder,
            what: what(),
        })
    }
}

/// SCR@τ: the fraction of cosines strictly below `tau`; `None` for no cosines.
pub fn scr(cosines: &[f64], tau: f64) -> Option<f64> {
    (!cosines.is_empty())
        .then(|| cosines.iter().filter(|&&c| c < tau).count() as f64 / cosines.len() as f64)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Scores a generated image against its references, following the paper exactly.
///
/// `text` is the CLIP text embedding of the prompt; `thresholds` are the SCR thresholds τ.
pub fn score_image(
    generated: &Embeddings,
    references: &[Reference<'_>],
    text: Option<&[f32]>,
    thresholds: &[f64],
) -> Result<Metrics, MetricError> {
    if references.is_empty() {
        return Err(MetricError::NoReferences);
    }
    if let Some(&tau) = thresholds.iter().find(|t| !t.is_finite()) {
        return Err(MetricError::Threshold(tau));
    }
    let clip = per_reference("CLIP", generated, references, |e| e.clip.as_deref())?;
    let dino = per_reference("DINO", generated, references, |e| e.dino.as_deref())?;
    let dinov2 = per_reference("DINOv2", generated, references, |e| e.dinov2.as_deref())?;
    let clip_t = match (generated.clip.as_deref(), text) {
        (Some(image), Some(text)) => {
            let text = usable("CLIP", text, || "the prompt text's embedding".into())?;
            Some(cosine_of("CLIP", image, text)?)
        }
        _ => None,
    };
    let scr = match &dinov2 {
        Some(cosines) => thresholds
            .iter()
            .filter_map(|&tau| Some((tau_key(tau), scr(cosines, tau)?)))
            .collect(),
        None => Default::default(),
    };
    let at = |cosines: &Option<Vec<f64>>, i: usize| cosines.as_ref().map(|c| c[i]);
    let subjects = references
        .iter()
        .enumerate()
        .map(|(i, r)| SubjectScores {
            name: r.name.to_owned(),
            clip_i: at(&clip, i),
            dino: at(&dino, i),
            dinov2: at(&dinov2, i),
            local: None,
        })
        .collect();
    Ok(Metrics {
        clip_t,
        clip_i: clip.as_deref().and_then(mean),
        dino: dino.as_deref().and_then(mean),
        dinov2: dinov2.as_deref().and_then(mean),
        scr,
        subjects,
        ..Metrics::default()
    })
}

/// Cosines of the generated image against each reference for one encoder; `None` where the
/// encoder is absent on both sides.
fn per_reference(
    encoder: &'static str,
    generated: &Embeddings,
    references: &[Reference<'_>],
    pick: impl Fn(&Embeddings) -> Option<&[f32]>,
) -> Result<Option<Vec<f64>>, MetricError> {
    let Some(generated) = pick(generated) else {
        return match references
            .iter()
            .enumerate()
            .find(|(_, r)| pick(r.embeddings).is_some())
        {
            Some((index, r)) => Err(MetricError::MissingGenerated {
                encoder,
                index,
                name: r.name.to_owned(),
            }),
            None => Ok(None),
        };
    };
    let generated = usable(encoder, generated, || {
        "the generated image's embedding".into()
    })?;
    references
        .iter()
        .enumerate()
        .map(|(index, r)| match pick(r.embeddings) {
            Some(reference) => {
                let what = || format!("reference {index} ({})'s embedding", r.name);
                cosine_of(encoder, generated, usable(encoder, reference, what)?)
            }
            None => Err(MetricError::MissingReference {
                encoder,
                index,
                name: r.name.to_owned(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embeddings(clip: &[f32], dinov2: &[f32]) -> Embeddings {
        Embeddings {
            clip: Some(clip.to_vec()),
            dino: None,
            dinov2: Some(dinov2.to_vec()),
        }
    }

    #[test]
    fn cosine_normalises_and_checks() {
        assert!((cosine(&[2.0, 0.0], &[3.0, 3.0]).unwrap() - 0.5f64.sqrt()).abs() < 1e-12);
        assert!(matches!(
            cosine(&[1.0], &[1.0, 0.0]),
            Err(MetricError::Dimension { .. })
        ));
        assert!(matches!(
            cosine(&[0.0, 0.0], &[1.0, 0.0]),
            Err(MetricError::Degenerate { .. })
        ));
    }

    #[test]
    fn scr_counts_strictly_below() {
        assert_eq!(scr(&[0.1, 0.4, 0.7, 0.39], 0.4), Some(0.5));
        assert_eq!(scr(&[], 0.4), None);
    }

    #[test]
    fn score_image_follows_the_paper() {
        let generated = embeddings(&[1.0, 0.0], &[1.0, 0.0]);
        // DINOv2 cosines 0.6 and 0.0; CLIP cosines 1.0 and 0.0.
        let a = embeddings(&[1.0, 0.0], &[0.6, 0.8]);
        let b = embeddings(&[0.0, 1.0], &[0.0, 1.0]);
        let refs = [
            Reference {
                name: "dog",
                embeddings: &a,
            },
            Reference {
                name: "cup",
                embeddings: &b,
            },
        ];
        let m = score_image(&generated, &refs, Some(&[1.0, 1.0]), &[0.4, 0.6, 0.7]).unwrap();
        assert!((m.clip_t.unwrap() - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(m.clip_i, Some(0.5));
        assert_eq!(m.dino, None);
        assert!((m.dinov2.unwrap() - 0.3).abs() < 1e-7);
        // cos 0.6 is not below 0.6 (strict), but is below 0.7.
        let scr: Vec<_> = m.scr.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(scr, [("0.4", 0.5), ("0.6", 0.5), ("0.7", 1.0)]);
        assert_eq!(m.subjects[1].name, "cup");
        assert_eq!(m.subjects[1].clip_i, Some(0.0));
        assert_eq!(m.subjects[0].dino, None);
    }

    #[test]
    fn missing_encoders_give_none_and_half_missing_is_an_error() {
        let clip_only = Embeddings {
            clip: Some(vec![1.0, 0.0]),
            ..Embeddings::default()
        };
        let r = [Reference {
            name: "dog",
            embeddings: &clip_only,
        }];
        let m = score_image(&clip_only, &r, None, &[0.4]).unwrap();
        assert_eq!((m.clip_t, m.clip_i, m.dinov2), (None, Some(1.0), None));
        assert!(m.scr.is_empty(), "SCR never falls back to CLIP");

        let full = embeddings(&[1.0, 0.0], &[1.0, 0.0]);
        let err = score_image(&full, &r, None, &[0.4]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "DINOv2: the generated image has an embedding but reference 0 (dog) has none"
        );
        assert_eq!(
            score_image(&full, &[], None, &[0.4]),
            Err(MetricError::NoReferences)
        );
    }
}
