//! Report writers: pure functions from scores to bytes, and [`write_report`] that writes them all.
//!
//! | file | from | function |
//! |---|---|---|
//! | `results.jsonl` | `&[ImageScores]` | [`results_jsonl`] |
//! | `summary.csv` | [`Summary`] | [`summary_csv`] |
//! | `report.md` | [`Summary`] | [`report_md`] |
//! | `scr_vs_n`, `scr_by_scene`, `clip_vs_scr` (`.svg`, `.png`) | [`Summary`] | [`Figure`] |
//!
//! Output depends only on the input (no clock, no paths, no hash-map order), so a report can be
//! diffed and snapshot-tested. Failed images stay visible: as lines with `error` in
//! `results.jsonl`, in the `failed` column of `summary.csv`, and listed with their reasons in
//! `report.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use benchmark::Scene;

use crate::aggregate::{Cell, Metric, Stat, Summary, aggregate};
use crate::bootstrap::Bootstrap;
use crate::error::Error;
use crate::figures::Figure;
use crate::paper::import_paper_results;
use crate::record::ImageScores;

/// What [`write_report`] computes and writes.
#[derive(Clone, Debug, PartialEq)]
pub struct ReportOptions {
    pub bootstrap: Bootstrap,
    /// Write the figures (SVG and PNG).
    pub figures: bool,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            bootstrap: Bootstrap::default(),
            figures: true,
        }
    }
}

/// The files [`write_report`] wrote, and the summary they show (for embedding elsewhere).
#[derive(Clone, Debug, PartialEq)]
pub struct ReportFiles {
    pub results: PathBuf,
    pub summary_csv: PathBuf,
    pub report_md: PathBuf,
    /// SVG and PNG of every [`Figure`], in [`Figure::ALL`] order.
    pub figures: Vec<PathBuf>,
    pub summary: Summary,
}

/// Writes `results.jsonl`, `summary.csv`, `report.md` and the figures into `dir` (created).
pub fn write_report(
    dir: &Path,
    study: &str,
    scores: &[ImageScores],
    options: &ReportOptions,
) -> Result<ReportFiles, Error> {
    let summary = aggregate(scores, &options.bootstrap)?;
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let write = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(Error::io(&path))?;
        Ok::<_, Error>(path)
    };
    let results = write("results.jsonl", results_jsonl(scores).as_bytes())?;
    let summary_csv_path = write("summary.csv", summary_csv(&summary).as_bytes())?;
    let report_md_path = write("report.md", report_md(study, &summary).as_bytes())?;
    let mut figures = Vec::new();
    if options.figures {
        for figure in Figure::ALL {
            figures.push(write(
                &format!("{}.svg", figure.name()),
                figure.svg(&summary)?.as_bytes(),
            )?);
            figures.push(write(
                &format!("{}.png", figure.name()),
                &figure.png(&summary)?,
            )?);
        }
    }
    Ok(ReportFiles {
        results,
        summary_csv: summary_csv_path,
        report_md: report_md_path,
        figures,
        summary,
    })
}

/// Imports the paper's `<model>_results.json` files and writes their report into `dir`; the study
/// is named after `dir`. Backs `scrbench scores import`.
pub fn import_and_report(results_files: &[PathBuf], dir: &Path) -> Result<ReportFiles, Error> {
    let mut scores = Vec::new();
    for file in results_files {
        scores.extend(import_paper_results(file)?);
    }
    let study = dir
        .file_name()
        .map_or("paper".into(), |n| n.to_string_lossy().into_owned());
    write_report(dir, &study, &scores, &ReportOptions::default())
}

/// One JSON object per line, sorted by model, prompt id, seed.
pub fn results_jsonl(scores: &[ImageScores]) -> String {
    let mut sorted: Vec<&ImageScores> = scores.iter().collect();
    sorted.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    sorted
        .into_iter()
        .map(|s| {
            let line = serde_json::to_string(s).expect("ImageScores always serialises");
            line + "\n"
        })
        .collect()
}

/// Every aggregate cell: `model,subject_count,scene,images,prompts,failed`, then for each metric
/// its mean and bootstrap bounds (`<metric>,<metric>_lo,<metric>_hi`); `all` for an unrestricted
/// dimension, an empty field for a metric no image has. Numbers are written in full precision.
pub fn summary_csv(summary: &Summary) -> String {
    let metrics = summary.metrics();
    let mut out = String::from("model,subject_count,scene,images,prompts,failed");
    for m in &metrics {
        write!(out, ",{m},{m}_lo,{m}_hi").unwrap();
    }
    out.push('\n');
    for cell in &summary.cells {
        let count = cell.subject_count.map_or("all".into(), |n| n.to_string());
        let scene = cell.scene.map_or("all".into(), |s| s.to_string());
        write!(
            out,
            "{},{count},{scene},{},{},{}",
            csv_field(&cell.model),
            cell.images,
            cell.prompts,
            cell.failed
        )
        .unwrap();
        for m in &metrics {
            match cell.stat(m) {
                Some(s) => write!(out, ",{},{},{}", s.mean, s.lo, s.hi).unwrap(),
                None => out.push_str(",,,"),
            }
        }
        out.push('\n');
    }
    out
}

fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The Markdown report: Table 1 in the paper's layout, SCR with intervals by N, by scene, by
/// N × scene and at every threshold, and the failed images with their reasons.
pub fn report_md(study: &str, summary: &Summary) -> String {
    let mut out = String::new();
    let b = &summary.bootstrap;
    let images: usize = summary.cells_all().map(|c| c.images).sum();
    let failed = summary.failed.len();
    writeln!(out, "# {}: identity collapse\n", md(study)).unwrap();
    writeln!(
        out,
        "{images} scored images and {failed} failed, from {} model(s). Values are plain means over \
         images (the paper's convention); intervals are {:.0}% percentile-bootstrap intervals \
         resampling prompts (the seeds of a prompt stay together), {} resamples, seed {:#018x}. \
         SCR@τ is the share of reference subjects whose DINOv2 cosine with the generated image \
         is below τ, shown as a percentage.\n",
        summary.models.len(),
        b.level * 100.0,
        b.resamples,
        b.seed
    )
    .unwrap();

    out.push_str("| Model | images | prompts | failed |\n|---|---|---|---|\n");
    for cell in summary.cells_all() {
        writeln!(
            out,
            "| {} | {} | {} | {} |",
            md(&cell.model),
            cell.images,
            cell.prompts,
            cell.failed
        )
        .unwrap();
    }
    if !summary.labels.is_empty() {
        out.push_str("\nWhat the models are, as their adapters label them:\n\n");
        for (model, label) in &summary.labels {
            writeln!(out, "- {}: {}", md(model), md(label)).unwrap();
        }
    }

    let tau = summary.headline_tau().map(str::to_owned);
    let scr = tau.as_deref().map(Metric::scr);
    let headline = [Metric::ClipT, Metric::ClipI, Metric::Dinov2]
        .into_iter()
        .chain(scr.clone())
        .collect::<Vec<_>>();
    let headline_title = headline
        .iter()
        .map(Metric::title)
        .collect::<Vec<_>>()
        .join(" / ");
    let counts: Vec<Option<usize>> = summary.subject_counts.iter().map(|&n| Some(n)).collect();

    writeln!(
        out,
        "\n## Table 1: {headline_title} by number of subjects N\n"
    )
    .unwrap();
    grid(&mut out, summary, "N", &counts, |cell| {
        headline
            .iter()
            .map(|m| cell.stat(m).map_or("–".into(), |s| value(m, s.mean)))
            .collect::<Vec<_>>()
            .join(" / ")
    });

    if let Some(scr) = &scr {
        let title = scr.title();
        writeln!(out, "\n## {title} by number of subjects N, with 95% CI\n").unwrap();
        let mut rows = counts.clone();
        rows.push(None);
        grid(&mut out, summary, "N", &rows, |cell| with_ci(cell, scr));
    }

    writeln!(out, "\n## By scene type: {headline_title}\n").unwrap();
    let scene_rows: Vec<Option<Scene>> = Scene::ALL.into_iter().map(Some).collect();
    scene_grid(&mut out, summary, &scene_rows, |cell| {
        let means = headline
            .iter()
            .map(|m| cell.stat(m).map_or("–".into(), |s| value(m, s.mean)))
            .collect::<Vec<_>>()
            .join(" / ");
        match &scr {
            Some(scr) => format!("{means} [{}]", ci(cell.stat(scr), scr)),
            None => means,
        }
    });

    if let Some(scr) = &scr {
        writeln!(
            out,
            "\n## {} by N and scene type, with 95% CI\n",
            scr.title()
        )
        .unwrap();
        write!(out, "| N | Scene |").unwrap();
        for model in &summary.models {
            write!(out, " {} |", md(model)).unwrap();
        }
        writeln!(out, "\n|---|---|{}", "---|".repeat(summary.models.len())).unwrap();
        for &n in &summary.subject_counts {
            for scene in Scene::ALL {
                write!(out, "| {n} | {scene} |").unwrap();
                for model in &summary.models {
                    let text = summary
                        .cell(model, Some(n), Some(scene))
                        .map_or("–".into(), |c| with_ci(c, scr));
                    write!(out, " {text} |").unwrap();
                }
                out.push('\n');
            }
        }
    }

    if !summary.thresholds.is_empty() {
        out.push_str("\n## SCR at every threshold, with 95% CI\n\n| Model | N |");
        for tau in &summary.thresholds {
            write!(out, " SCR@{tau} |").unwrap();
        }
        writeln!(
            out,
            "\n|---|---|{}",
            "---|".repeat(summary.thresholds.len())
        )
        .unwrap();
        for model in &summary.models {
            let mut rows = counts.clone();
            rows.push(None);
            for n in rows {
                let Some(cell) = summary.cell(model, n, None) else {
                    continue;
                };
                let n = n.map_or("all".into(), |n| n.to_string());
                write!(out, "| {} | {n} |", md(model)).unwrap();
                for tau in &summary.thresholds {
                    write!(out, " {} |", with_ci(cell, &Metric::scr(tau))).unwrap();
                }
                out.push('\n');
            }
        }
    }

    if summary.has_local() {
        local_sections(&mut out, summary, &counts);
    }

    writeln!(out, "\n## Failed images\n").unwrap();
    if summary.failed.is_empty() {
        out.push_str("None.\n");
    }
    for f in &summary.failed {
        writeln!(
            out,
            "- {} / {} / seed {}: {}",
            md(&f.model),
            md(&f.prompt_id),
            f.seed,
            md(&f.error)
        )
        .unwrap();
    }
    out
}

/// Global beside local (per-subject) SCR by N and by scene, then homogenisation and
/// same-instance by N, all with intervals.
fn local_sections(out: &mut String, summary: &Summary, counts: &[Option<usize>]) {
    let tau = summary
        .headline_tau()
        .filter(|t| summary.local_thresholds.iter().any(|l| l == t))
        .or(summary.local_thresholds.first().map(String::as_str))
        .unwrap_or_default()
        .to_owned();
    let (global, local) = (Metric::scr(&tau), Metric::LocalScr(tau.clone()));
    writeln!(
        out,
        "\n## Global and local SCR@{tau}, with 95% CI\n\n\
         Global: the paper's SCR (the whole image against each reference). Local: each subject \
         against the detected crop matched to it (one crop serves at most one subject); a subject \
         with no crop counts as collapsed (DESIGN §3).\n"
    )
    .unwrap();
    let models = &summary.models;
    let columns = |out: &mut String, head: &str| {
        write!(out, "| {head} |").unwrap();
        for model in models {
            write!(out, " {0} global | {0} local |", md(model)).unwrap();
        }
        writeln!(out, "\n|---|{}", "---|---|".repeat(models.len())).unwrap();
    };
    let pair = |out: &mut String, cell: Option<&Cell>, a: &Metric, b: &Metric| {
        for metric in [a, b] {
            let text = cell.map_or("–".into(), |c| with_ci(c, metric));
            write!(out, " {text} |").unwrap();
        }
    };
    let mut rows = counts.to_vec();
    rows.push(None);
    columns(out, "N");
    for &n in &rows {
        write!(out, "| {} |", n.map_or("all".into(), |n| n.to_string())).unwrap();
        for model in models {
            pair(out, summary.cell(model, n, None), &global, &local);
        }
        out.push('\n');
    }
    out.push('\n');
    columns(out, "Scene");
    for scene in Scene::ALL {
        write!(out, "| {scene} |").unwrap();
        for model in models {
            pair(out, summary.cell(model, None, Some(scene)), &global, &local);
        }
        out.push('\n');
    }
    writeln!(
        out,
        "\n## Homogenisation and same-instance, with 95% CI\n\n\
         Homogenisation: the mean DINOv2 cosine between the crops matched to different subjects \
         (higher = the subjects look alike). Same-instance: subjects per image whose best crop is \
         also another subject's best crop.\n"
    )
    .unwrap();
    write!(out, "| N |").unwrap();
    for model in models {
        write!(out, " {0} homogenisation | {0} same-instance |", md(model)).unwrap();
    }
    writeln!(out, "\n|---|{}", "---|---|".repeat(models.len())).unwrap();
    for &n in &rows {
        write!(out, "| {} |", n.map_or("all".into(), |n| n.to_string())).unwrap();
        for model in models {
            let cell = summary.cell(model, n, None);
            pair(out, cell, &Metric::Homogenisation, &Metric::SameInstance);
        }
        out.push('\n');
    }
}

impl Summary {
    /// The per-model `all` cells, in model order.
    fn cells_all(&self) -> impl Iterator<Item = &Cell> {
        self.models.iter().filter_map(|m| self.cell(m, None, None))
    }
}

/// A table with one row per subject count (`None`: all) and one column per model.
fn grid(
    out: &mut String,
    summary: &Summary,
    head: &str,
    rows: &[Option<usize>],
    text: impl Fn(&Cell) -> String,
) {
    header(out, head, &summary.models);
    for &n in rows {
        write!(out, "| {} |", n.map_or("all".into(), |n| n.to_string())).unwrap();
        for model in &summary.models {
            let cell = summary.cell(model, n, None);
            write!(out, " {} |", cell.map_or("–".into(), &text)).unwrap();
        }
        out.push('\n');
    }
}

/// A table with one row per scene and one column per model.
fn scene_grid(
    out: &mut String,
    summary: &Summary,
    rows: &[Option<Scene>],
    text: impl Fn(&Cell) -> String,
) {
    header(out, "Scene", &summary.models);
    for &scene in rows {
        write!(out, "| {} |", scene.map_or("all".into(), |s| s.to_string())).unwrap();
        for model in &summary.models {
            let cell = summary.cell(model, None, scene);
            write!(out, " {} |", cell.map_or("–".into(), &text)).unwrap();
        }
        out.push('\n');
    }
}

fn header(out: &mut String, head: &str, models: &[String]) {
    write!(out, "| {head} |").unwrap();
    for model in models {
        write!(out, " {} |", md(model)).unwrap();
    }
    writeln!(out, "\n|---|{}", "---|".repeat(models.len())).unwrap();
}

/// A mean as printed: SCR (global or local) as a percentage with one decimal, everything else
/// with three decimals.
fn value(metric: &Metric, x: f64) -> String {
    if metric.is_rate() {
        format!("{:.1}%", x * 100.0)
    } else {
        format!("{x:.3}")
    }
}

/// Bounds as printed, without the unit: `93.1, 98.2` or `0.250, 0.270`.
fn ci(stat: Option<&Stat>, metric: &Metric) -> String {
    match stat {
        Some(s) if metric.is_rate() => format!("{:.1}, {:.1}", s.lo * 100.0, s.hi * 100.0),
        Some(s) => format!("{:.3}, {:.3}", s.lo, s.hi),
        None => "–".into(),
    }
}

/// `96.0% [93.1, 98.2]`.
fn with_ci(cell: &Cell, metric: &Metric) -> String {
    match cell.stat(metric) {
        Some(s) => format!("{} [{}]", value(metric, s.mean), ci(Some(s), metric)),
        None => "–".into(),
    }
}

/// Text safe inside a Markdown table cell or list item.
fn md(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}
