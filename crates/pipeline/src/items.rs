//! Items: the unit of work, one (model, prompt, seed), and how a run narrows them.
//!
//! Items are enumerated in a canonical order (model name, benchmark prompt order, seed order), so
//! a shard `I/N` is the same slice in every process given the same filters.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use benchmark::{Benchmark, Prompt, Scene};
use generate::reference::REFERENCES;

/// One image of the study.
#[derive(Clone, Debug)]
pub struct Item {
    pub model: String,
    pub prompt: Arc<Prompt>,
    pub seed: u64,
}

impl Item {
    /// The reference item of `subject`: model [`REFERENCES`], prompt id = subject name, seed 0.
    pub fn reference(bench: &Benchmark, subject: &str) -> Option<Item> {
        let subject = bench.subject(subject)?;
        let location = bench
            .prompts
            .iter()
            .find(|p| p.subjects.contains(&subject.name))
            .map(|p| p.location.clone())?;
        let prompt = Prompt {
            id: subject.name.clone(),
            scene: Scene::Neutral,
            text: subject.name.clone(),
            subjects: vec![subject.name.clone()],
            location,
        };
        Some(Item {
            model: REFERENCES.to_owned(),
            prompt: Arc::new(prompt),
            seed: 0,
        })
    }

    pub fn is_reference(&self) -> bool {
        self.model == REFERENCES
    }

    /// `model/prompt_id/seed`, the form `explain` takes.
    pub fn id(&self) -> String {
        format!("{}/{}/{}", self.model, self.prompt.id, self.seed)
    }
}

/// A parsed `model/prompt_id/seed`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ItemId {
    pub model: String,
    pub prompt_id: String,
    pub seed: u64,
}

impl FromStr for ItemId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let [model, prompt_id, seed] = parts[..] else {
            return Err(format!("`{s}`: expected <model>/<prompt_id>/<seed>"));
        };
        let seed = seed
            .parse()
            .map_err(|_| format!("`{s}`: seed `{seed}` is not a number"))?;
        Ok(ItemId {
            model: model.into(),
            prompt_id: prompt_id.into(),
            seed,
        })
    }
}

/// A deterministic slice `index/count` of the items (0-based index).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl FromStr for Shard {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}`: expected I/N with 0 <= I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (usize, usize) = (
            i.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// What a run or a status covers.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Models by name; empty = all configured models.
    pub models: Vec<String>,
    /// Prompt ids; empty = all.
    pub prompts: Vec<String>,
    /// Seeds; empty = the study's seeds.
    pub seeds: Vec<u64>,
    /// At most this many items (after the other filters, before sharding).
    pub limit: Option<usize>,
    pub shard: Option<Shard>,
}

/// Unknown names in a [`Selection`].
#[derive(Debug, thiserror::Error)]
pub enum SelectionError {
    #[error("unknown model `{name}`; configured models: {known}")]
    UnknownModel { name: String, known: String },
    #[error("unknown prompt id `{0}`")]
    UnknownPrompt(String),
}

/// Enumerates the selected items in canonical order.
pub fn select(
    bench: &Benchmark,
    models: &[String],
    seeds: &[u64],
    sel: &Selection,
) -> Result<Vec<Item>, SelectionError> {
    for name in &sel.models {
        if !models.contains(name) {
            return Err(SelectionError::UnknownModel {
                name: name.clone(),
                known: models.join(", "),
            });
        }
    }
    for id in &sel.prompts {
        if bench.prompt(id).is_none() {
            return Err(SelectionError::UnknownPrompt(id.clone()));
        }
    }
    let prompts: Vec<Arc<Prompt>> = bench
        .prompts
        .iter()
        .filter(|p| sel.prompts.is_empty() || sel.prompts.contains(&p.id))
        .cloned()
        .map(Arc::new)
        .collect();
    let seeds = if sel.seeds.is_empty() {
        seeds
    } else {
        &sel.seeds[..]
    };
    let mut items = Vec::new();
    for model in models
        .iter()
        .filter(|m| sel.models.is_empty() || sel.models.contains(m))
    {
        for prompt in &prompts {
            for &seed in seeds {
                items.push(Item {
                    model: model.clone(),
                    prompt: prompt.clone(),
                    seed,
                });
            }
        }
    }
    if let Some(limit) = sel.limit {
        items.truncate(limit);
    }
    if let Some(shard) = sel.shard {
        items = items
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % shard.count == shard.index)
            .map(|(_, item)| item)
            .collect();
    }
    Ok(items)
}

/// The reference items of every subject `items` use, in benchmark subject order.
pub fn references(bench: &Benchmark, items: &[Item]) -> Vec<Item> {
    bench
        .subjects
        .iter()
        .filter(|s| {
            items
                .iter()
                .any(|item| item.prompt.subjects.contains(&s.name))
        })
        .filter_map(|s| Item::reference(bench, &s.name))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_parses_and_rejects() {
        assert_eq!("1/4".parse::<Shard>(), Ok(Shard { index: 1, count: 4 }));
        assert!("4/4".parse::<Shard>().is_err());
        assert!("0/0".parse::<Shard>().is_err());
        assert!("x".parse::<Shard>().is_err());
    }

    #[test]
    fn item_id_parses() {
        let id: ItemId = "mosaic/01_no_interaction/42".parse().unwrap();
        assert_eq!(id.model, "mosaic");
        assert_eq!(id.prompt_id, "01_no_interaction");
        assert_eq!(id.seed, 42);
        assert!("mosaic/01".parse::<ItemId>().is_err());
        assert!(
            "a/b/c"
                .parse::<ItemId>()
                .unwrap_err()
                .contains("not a number")
        );
    }
}
