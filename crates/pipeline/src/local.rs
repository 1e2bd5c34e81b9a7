//! The per-subject (local) SCR (DESIGN §3): `embed-crops` embeds every crop of an image with
//! DINOv2 (the encoder and preprocessing of `embed-dinov2`), and `local-score` assigns crops to
//! reference subjects by a maximum-weight matching on their cosines, so one instance cannot serve
//! two identities. A subject is collapsed at τ when it has no matched crop or its matched cosine is
//! below τ. Also per image: the homogenisation index (mean cosine between the matched crops of
//! different subjects) and the number of subjects whose best crop is also another subject's best.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use preprocess::Preprocessor;
use serde::{Deserialize, Serialize};
use serde_json::json;
use store::{ActionKey, Digest};

use scores::record::tau_key;

use crate::detect::{Crops, Matching};
use crate::embed::{Encoder, embed_jobs, from_bytes, to_bytes};
use crate::items::Item;
use crate::score::ReferenceEmbeddings;
use crate::stage::{Context, Output, Stage, StageError, StageOutput, new_key};

/// Embeds every crop of the item with DINOv2, batched across items.
pub struct EmbedCropsStage {
    encoder: Arc<Encoder>,
    preprocess: Preprocessor,
    batch: usize,
}

impl EmbedCropsStage {
    pub fn new(encoder: Arc<Encoder>, batch: usize) -> EmbedCropsStage {
        EmbedCropsStage {
            encoder,
            preprocess: Preprocessor::dino_paper(),
            batch,
        }
    }

    /// The preprocessed pixels of every crop of one item, and how many crops.
    fn pixels(&self, cx: &Context, key: &ActionKey) -> Result<(Vec<f32>, usize), StageError> {
        let mut pixels = Vec::new();
        let mut count = 0;
        for (name, digest) in key.inputs.iter().filter(|(n, _)| n.starts_with("crop.")) {
            let bytes = cx.store.read_blob(digest)?;
            let path = PathBuf::from(format!("{}/{name}@{}", cx.item.id(), digest.short()));
            let image = preprocess::decode_rgb(&bytes, &path)
                .map_err(|e| StageError::Failed(e.to_string()))?;
            pixels.extend(self.preprocess.process(&image));
            count += 1;
        }
        Ok((pixels, count))
    }
}

/// Crop output names in index order (`crop.10` after `crop.9`).
fn crop_names(count: usize) -> impl Iterator<Item = String> {
    (0..count).map(|i| format!("crop.{i:04}"))
}

impl Stage for EmbedCropsStage {
    fn name(&self) -> &'static str {
        "embed-crops"
    }

    fn release(&self) {
        self.encoder.release();
    }

    fn version(&self) -> u32 {
        1
    }

    fn applies_to(&self, item: &Item) -> bool {
        !item.is_reference()
    }

    fn key(&self, cx: &Context) -> Result<ActionKey, StageError> {
        let mut key = new_key(self);
        key.params
            .insert("preprocess".into(), json!(self.preprocess.params()));
        let crop = cx
            .upstream
            .get("crop")
            .ok_or_else(|| StageError::Failed("the crop stage has not run".into()))?;
        let count = crop
            .outputs
            .keys()
            .filter(|k| k.starts_with("crop."))
            .count();
        for (i, name) in crop_names(count).enumerate() {
            key.inputs
                .insert(name, cx.upstream_output("crop", &format!("crop.{i}"))?);
        }
        key.model = self.encoder.model_key(cx)?;
        Ok(key)
    }

    fn run(&self, cx: &Context, key: &ActionKey) -> Result<StageOutput, StageError> {
        self.run_batch(&[(cx, key)])
            .pop()
            .unwrap_or_else(|| Err(StageError::Failed("no result".into())))
    }

    fn batch_size(&self) -> usize {
        self.batch
    }

    /// All crops of all items in one forward pass; outputs one `embeddings` blob per item (its
    /// crops' embeddings, concatenated little-endian f32s, in crop order).
    fn run_batch(&self, jobs: &[(&Context, &ActionKey)]) -> Vec<Result<StageOutput, StageError>> {
        let images = jobs.iter().map(|(cx, key)| self.pixels(cx, key)).collect();
        let side = self.preprocess.crop_size() as usize;
        embed_jobs(&self.encoder, side, images)
            .into_iter()
            .map(|embedded| {
                let embeddings = embedded?;
                let dim = embeddings.first().map_or(0, Vec::len);
                let bytes: Vec<u8> = embeddings.iter().flat_map(|e| to_bytes(e)).collect();
                let mut outputs = BTreeMap::new();
                outputs.insert("embeddings".to_owned(), Output::Bytes(bytes));
                Ok(StageOutput {
                    outputs,
                    meta: json!({"crops": embeddings.len(), "dim": dim}),
                })
            })
            .collect()
    }
}

/// One subject's local verdict.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubjectLocal {
    pub name: String,
    /// The crop matched to this subject; `null` when none was left for it.
    pub crop: Option<usize>,
    /// The query (subject index) of the matched crop's detection.
    pub query: Option<usize>,
    /// DINOv2 cosine between the matched crop and this subject's reference; `null` when unmatched.
    pub cosine: Option<f64>,
    /// The crop most similar to this subject's reference, matched or not.
    pub best_crop: Option<usize>,
    pub best_cosine: Option<f64>,
    /// Collapsed at each τ (unmatched, or matched cosine below τ).
    pub collapsed: BTreeMap<String, bool>,
}

/// One crop as `local-score` saw it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CropLocal {
    pub query: usize,
    pub cosines: Vec<f64>,
}

/// What `local-score` stores per image (`local` output).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LocalScores {
    /// Share of subjects collapsed, per τ.
    pub local_scr: BTreeMap<String, f64>,
    pub subjects: Vec<SubjectLocal>,
    /// Every crop: the query (subject index) of its detection and its cosine to each subject's
    /// reference, in subject order.
    pub crops: Vec<CropLocal>,
    /// Mean DINOv2 cosine between the matched crops of different subjects; `null` with fewer than
    /// two matched subjects.
    pub homogenisation: Option<f64>,
    /// Subjects whose best crop is also another subject's best crop.
    pub same_instance: usize,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na.sqrt() * nb.sqrt())
    }
}

/// The per-image local metrics from the subjects' reference embeddings and the crops' embeddings.
pub fn local_scores(
    names: &[String],
    references: &[Vec<f32>],
    crops: &[Vec<f32>],
    queries: &[usize],
    thresholds: &[f64],
    matching: Matching,
) -> LocalScores {
    let sim: Vec<Vec<f64>> = references
        .iter()
        .map(|r| crops.iter().map(|c| cosine(r, c)).collect())
        .collect();
    let assignment = match matching {
        Matching::Hungarian => max_weight_matching(&sim),
        Matching::Greedy => greedy_matching(&sim),
    };
    let best: Vec<Option<usize>> = sim
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(j, _)| j)
        })
        .collect();
    let same_instance = best
        .iter()
        .enumerate()
        .filter(|(i, b)| {
            b.is_some()
                && best
                    .iter()
                    .enumerate()
                    .any(|(other, ob)| other != *i && ob == *b)
        })
        .count();
    let matched: Vec<usize> = assignment.iter().flatten().copied().collect();
    let mut pairs = Vec::new();
    for (a, &ca) in matched.iter().enumerate() {
        for &cb in &matched[a + 1..] {
            pairs.push(cosine(&crops[ca], &crops[cb]));
        }
    }
    let homogenisation =
        (!pairs.is_empty()).then(|| pairs.iter().sum::<f64>() / pairs.len() as f64);
    let subjects: Vec<SubjectLocal> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let crop = assignment[i];
            let cosine = crop.map(|j| sim[i][j]);
            SubjectLocal {
                name: name.clone(),
                crop,
                query: crop.and_then(|j| queries.get(j).copied()),
                cosine,
                best_crop: best[i],
                best_cosine: best[i].map(|j| sim[i][j]),
                collapsed: thresholds
                    .iter()
                    .map(|&t| (tau_key(t), cosine.is_none_or(|c| c < t)))
                    .collect(),
            }
        })
        .collect();
    let local_scr = thresholds
        .iter()
        .map(|&t| {
            let key = tau_key(t);
            let collapsed = subjects.iter().filter(|s| s.collapsed[&key]).count();
            (key, collapsed as f64 / names.len().max(1) as f64)
        })
        .collect();
    LocalScores {
        local_scr,
        subjects,
        crops: queries
            .iter()
            .enumerate()
            .map(|(j, &query)| CropLocal {
                query,
                cosines: sim.iter().map(|row| row[j]).collect(),
            })
            .collect(),
        homogenisation,
        same_instance,
    }
}

/// Greedy matching: (row, column) pairs in descending weight order (ties: lower row, then lower
/// column first), taken while both are free.
pub fn greedy_matching(weights: &[Vec<f64>]) -> Vec<Option<usize>> {
    let mut pairs: Vec<(usize, usize)> = weights
        .iter()
        .enumerate()
        .flat_map(|(i, row)| (0..row.len()).map(move |j| (i, j)))
        .collect();
    pairs.sort_by(|&(a, b), &(c, d)| {
        weights[c][d]
            .total_cmp(&weights[a][b])
            .then((a, b).cmp(&(c, d)))
    });
    let mut assignment = vec![None; weights.len()];
    let mut taken = vec![false; weights.first().map_or(0, Vec::len)];
    for (i, j) in pairs {
        if assignment[i].is_none() && !taken[j] {
            assignment[i] = Some(j);
            taken[j] = true;
        }
    }
    assignment
}

/// Maximum-weight bipartite matching of rows (subjects) to columns (crops) on `weights`
/// (rows × columns): for each row, its column or `None`. Every row gets a column when there are
/// enough columns (cosines may be negative, but a matched subject below τ counts as collapsed
/// anyway, so matching as many as possible is what we want). Hungarian algorithm, O(n²m).
pub fn max_weight_matching(weights: &[Vec<f64>]) -> Vec<Option<usize>> {
    let rows = weights.len();
    let cols = weights.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return vec![None; rows];
    }
    // Square cost matrix (minimisation), padded with zero-cost dummies.
    let n = rows.max(cols);
    let cost = |i: usize, j: usize| -> f64 {
        if i < rows && j < cols {
            -weights[i][j]
        } else {
            0.0
        }
    };
    // e-maxx Hungarian, 1-based with a virtual row/column 0.
    let inf = f64::INFINITY;
    let mut u = vec![0f64; n + 1];
    let mut v = vec![0f64; n + 1];
    let mut p = vec![0usize; n + 1];
    let mut way = vec![0usize; n + 1];
    for i in 1..=n {
        p[0] = i;
        let mut j0 = 0;
        let mut minv = vec![inf; n + 1];
        let mut used = vec![false; n + 1];
        loop {
            used[j0] = true;
            let i0 = p[j0];
            let mut delta = inf;
            let mut j1 = 0;
            for j in 1..=n {
                if !used[j] {
                    let cur = cost(i0 - 1, j - 1) - u[i0] - v[j];
                    if cur < minv[j] {
                        minv[j] = cur;
                        way[j] = j0;
                    }
                    if minv[j] < delta {
                        delta = minv[j];
                        j1 = j;
                    }
                }
            }
            for j in 0..=n {
                if used[j] {
                    u[p[j]] += delta;
                    v[j] -= delta;
                } else {
                    minv[j] -= delta;
                }
            }
            j0 = j1;
            if p[j0] == 0 {
                break;
            }
        }
        loop {
            let j1 = way[j0];
            p[j0] = p[j1];
            j0 = j1;
            if j0 == 0 {
                break;
            }
        }
    }
    let mut assignment = vec![None; rows];
    for (j, &i) in p.iter().enumerate().skip(1) {
        if i >= 1 && i - 1 < rows && j - 1 < cols {
            assignment[i - 1] = Some(j - 1);
        }
    }
    assignment
}

/// Scores every image locally from its crops' and its subjects' DINOv2 embeddings.
pub struct LocalScoreStage {
    pub thresholds: Vec<f64>,
    pub matching: Matching,
    pub references: ReferenceEmbeddings,
}

impl Stage for LocalScoreStage {
    fn name(&self) -> &'static str {
        "local-score"
    }

    fn version(&self) -> u32 {
        1
    }

    fn applies_to(&self, item: &Item) -> bool {
        !item.is_reference()
    }

    fn key(&self, cx: &Context) -> Result<ActionKey, StageError> {
        let mut key = new_key(self);
        key.params
            .insert("thresholds".into(), json!(self.thresholds));
        key.params
            .insert("subjects".into(), json!(cx.item.prompt.subjects));
        key.params.insert("matching".into(), json!(self.matching));
        key.inputs
            .insert("crops".into(), cx.upstream_output("crop", "crops")?);
        key.inputs.insert(
            "embeddings".into(),
            cx.upstream_output("embed-crops", "embeddings")?,
        );
        let references = self
            .references
            .read()
            .map_err(|_| StageError::Failed("reference table poisoned".into()))?;
        for (i, subject) in cx.item.prompt.subjects.iter().enumerate() {
            let digest = references
                .get(subject)
                .and_then(|r| r.get("embed-dinov2"))
                .ok_or_else(|| {
                    StageError::Failed(format!(
                        "the reference `{subject}` has no embed-dinov2 embedding (see `status` for its item)"
                    ))
                })?;
            key.inputs.insert(format!("ref.{i}"), *digest);
        }
        Ok(key)
    }

    fn run(&self, cx: &Context, key: &ActionKey) -> Result<StageOutput, StageError> {
        let read = |digest: &Digest| -> Result<Vec<f32>, StageError> {
            from_bytes(&cx.store.read_blob(digest)?)
        };
        let names = &cx.item.prompt.subjects;
        let references: Vec<Vec<f32>> = (0..names.len())
            .map(|i| read(&key.inputs[&format!("ref.{i}")]))
            .collect::<Result<_, _>>()?;
        let crops: Crops = serde_json::from_slice(&cx.store.read_blob(&key.inputs["crops"])?)
            .map_err(|e| StageError::Failed(format!("crops do not parse: {e}")))?;
        let flat = read(&key.inputs["embeddings"])?;
        let dim = references.first().map_or(0, Vec::len);
        if dim == 0 || flat.len() != dim * crops.crops.len() {
            return Err(StageError::Failed(format!(
                "{} crop embedding values for {} crops of dimension {dim}",
                flat.len(),
                crops.crops.len()
            )));
        }
        let embeddings: Vec<Vec<f32>> = flat.chunks_exact(dim).map(<[f32]>::to_vec).collect();
        let queries: Vec<usize> = crops.crops.iter().map(|c| c.query).collect();
        let scores = local_scores(
            names,
            &references,
            &embeddings,
            &queries,
            &self.thresholds,
            self.matching,
        );
        let bytes = serde_json::to_vec_pretty(&scores)
            .map_err(|e| StageError::Failed(format!("cannot serialise local scores: {e}")))?;
        let mut outputs = BTreeMap::new();
        outputs.insert("local".to_owned(), Output::Bytes(bytes));
        Ok(StageOutput {
            outputs,
            meta: json!({"local_scr": scores.local_scr}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_keeps_clear_pairs_where_hungarian_trades_them() {
        // Two intact subjects with their own crops (≈1); the third (collapsed) subject's crop
        // resembles neither it nor them, but its reference resembles subject 1's crop.
        let w = vec![
            vec![1.0, 0.90, 0.98],
            vec![0.90, 1.0, 0.85],
            vec![0.84, 0.84, 0.64],
        ];
        assert_eq!(greedy_matching(&w), vec![Some(0), Some(1), Some(2)]);
        let hungarian = max_weight_matching(&w);
        assert_ne!(
            hungarian[2],
            Some(2),
            "max-sum rescues the collapsed subject"
        );
        assert_eq!(
            greedy_matching(&[vec![0.5], vec![0.9]]),
            vec![None, Some(0)]
        );
        let none: Vec<Vec<f64>> = vec![vec![], vec![]];
        assert_eq!(greedy_matching(&none), vec![None, None]);
        assert_eq!(max_weight_matching(&none), vec![None, None]);
    }

    #[test]
    fn no_crops_means_every_subject_collapsed() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let refs = vec![vec![1.0, 0.0], vec![0.0, 1.0]];
        for matching in [Matching::Hungarian, Matching::Greedy] {
            let s = local_scores(&names, &refs, &[], &[], &[0.4], matching);
            assert_eq!(s.local_scr["0.4"], 1.0);
            assert_eq!(s.same_instance, 0);
            assert_eq!(s.homogenisation, None);
        }
    }

    /// Best total over all injective assignments (brute force), for checking the Hungarian.
    fn brute(weights: &[Vec<f64>]) -> f64 {
        fn go(weights: &[Vec<f64>], row: usize, used: &mut Vec<bool>) -> f64 {
            if row == weights.len() {
                return 0.0;
            }
            let mut best = f64::NEG_INFINITY;
            let free = used.iter().filter(|u| !**u).count();
            // Leaving a row unmatched is allowed only when columns run out.
            if free < weights.len() - row {
                best = go(weights, row + 1, used);
            }
            for j in 0..used.len() {
                if !used[j] {
                    used[j] = true;
                    best = best.max(weights[row][j] + go(weights, row + 1, used));
                    used[j] = false;
                }
            }
            best
        }
        go(weights, 0, &mut vec![false; weights[0].len()])
    }

    #[test]
    fn hungarian_matches_brute_force() {
        let mut seed = 7u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((seed >> 33) as f64 / (1u64 << 31) as f64) * 2.0 - 1.0
        };
        for rows in 1..=5 {
            for cols in 1..=5 {
                for _ in 0..20 {
                    let w: Vec<Vec<f64>> = (0..rows)
                        .map(|_| (0..cols).map(|_| next()).collect())
                        .collect();
                    let a = max_weight_matching(&w);
                    let mut seen = std::collections::BTreeSet::new();
                    let total: f64 = a
                        .iter()
                        .enumerate()
                        .filter_map(|(i, j)| j.map(|j| w[i][j]))
                        .sum();
                    assert!(a.iter().flatten().all(|j| seen.insert(*j)), "injective");
                    assert_eq!(a.iter().flatten().count(), rows.min(cols));
                    assert!((total - brute(&w)).abs() < 1e-9, "{w:?} {a:?}");
                }
            }
        }
    }

    #[test]
    fn one_instance_cannot_serve_two_subjects() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let refs = vec![vec![1.0, 0.0], vec![0.9, 0.1]];
        // One crop, closest to both references.
        let crops = vec![vec![1.0, 0.05]];
        let s = local_scores(&names, &refs, &crops, &[0], &[0.5], Matching::Hungarian);
        assert_eq!(s.subjects.iter().filter(|s| s.crop.is_some()).count(), 1);
        assert_eq!(s.local_scr["0.5"], 0.5);
        assert_eq!(s.same_instance, 2);
        assert_eq!(s.homogenisation, None);
    }
}
