//! `report.html`: the whole report as one self-contained page, with a gallery of the images.
//!
//! The page opens offline from any folder: it loads nothing (a Content-Security-Policy forbids
//! every fetch), images are `data:` URIs, the figures are inline SVG from [`Figure::svg`], and the
//! CSS and the script are inline. It shows, in order:
//!
//! - the title and provenance: the paragraph of `report.md` (images, failures, bootstrap), and per
//!   model the provenance entries its images share;
//! - every table of [`report_md`] (Table 1 in the paper's layout, the counts, SCR with intervals by
//!   N, by scene, by N × scene and at every τ) and the failed images with their reasons, rendered
//!   from the Markdown itself so the two reports always print the same numbers;
//! - the three [`Figure`]s;
//! - the gallery: one card per image (failed ones included), the generated thumbnail beside the
//!   reference thumbnails, the per-subject cosines (DINOv2, and CLIP-I/DINO where present), and
//!   the subjects whose DINOv2 cosine is below τ marked as collapsed. τ is selectable (the
//!   summary's thresholds, the headline one first selected), and the cards filter by model, N and
//!   scene. With detection, each subject also shows the crop matched to it and its cosine, and
//!   the card the local SCR. The script is plain JavaScript; without it the page still shows everything, marked at
//!   the headline τ.
//!
//! Opened with `#selftest` in its URL, the script applies each filter and each τ, counts the cards
//! the browser lays out and the subjects marked, and writes the counts into `#selftest` (see
//! [`SELFTEST_ID`]); the headless-browser test reads them back from the DOM.
//!
//! All text from the input (model names, prompt ids, subject names, error messages, provenance) is
//! HTML-escaped; the output depends only on the input (no clock, no paths), like every other writer.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use benchmark::Scene;

use crate::aggregate::Summary;
use crate::error::Error;
use crate::figures::Figure;
use crate::record::ImageScores;
use crate::report::{ReportFiles, ReportOptions, report_md, write_report};

/// Id of the element the `#selftest` run writes its result into.
pub const SELFTEST_ID: &str = "selftest";

/// The τ collapse is marked at when the summary has no SCR threshold (the paper's headline).
const DEFAULT_TAU: &str = "0.4";

/// Thumbnails for the gallery, all optional: a card without one shows a placeholder.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gallery {
    /// Generated images keyed by (model, prompt id, seed), as in [`ImageScores::sort_key`].
    pub images: BTreeMap<(String, String, u64), Vec<u8>>,
    /// Reference images keyed by subject name, as in [`crate::SubjectScores::name`].
    pub references: BTreeMap<String, Vec<u8>>,
    /// The crop matched to each subject (detection), keyed by the image's key and the subject.
    pub crops: BTreeMap<(String, String, u64, String), Vec<u8>>,
}

impl Gallery {
    /// Adds (or replaces) the thumbnail of one generated image (PNG or JPEG bytes).
    pub fn insert_image(&mut self, model: &str, prompt_id: &str, seed: u64, bytes: Vec<u8>) {
        self.images
            .insert((model.to_owned(), prompt_id.to_owned(), seed), bytes);
    }

    /// Adds (or replaces) the thumbnail of one reference subject (PNG or JPEG bytes).
    pub fn insert_reference(&mut self, name: &str, bytes: Vec<u8>) {
        self.references.insert(name.to_owned(), bytes);
    }

    /// Adds (or replaces) the crop matched to `subject` in one generated image.
    pub fn insert_crop(
        &mut self,
        (model, prompt_id, seed): (&str, &str, u64),
        subject: &str,
        bytes: Vec<u8>,
    ) {
        let key = (model.to_owned(), prompt_id.to_owned(), seed);
        self.crops
            .insert((key.0, key.1, key.2, subject.to_owned()), bytes);
    }

    fn crop(&self, scores: &ImageScores, subject: &str) -> Option<&[u8]> {
        let key = (
            scores.model.clone(),
            scores.prompt_id.clone(),
            scores.seed,
            subject.to_owned(),
        );
        self.crops.get(&key).map(Vec::as_slice)
    }

    fn image(&self, scores: &ImageScores) -> Option<&[u8]> {
        self.images
            .get(&(scores.model.clone(), scores.prompt_id.clone(), scores.seed))
            .map(Vec::as_slice)
    }
}

/// What [`write_report_html`] wrote: the files of [`write_report`] and `report.html`.
#[derive(Clone, Debug, PartialEq)]
pub struct HtmlReportFiles {
    pub report: ReportFiles,
    pub report_html: PathBuf,
}

/// [`write_report`], then `report.html` beside `report.md` (the same summary, so the same numbers).
pub fn write_report_html(
    dir: &Path,
    study: &str,
    scores: &[ImageScores],
    options: &ReportOptions,
    gallery: &Gallery,
) -> Result<HtmlReportFiles, Error> {
    let report = write_report(dir, study, scores, options)?;
    let report_html = write_html(dir, study, &report.summary, scores, gallery)?;
    Ok(HtmlReportFiles {
        report,
        report_html,
    })
}

/// Writes `report.html` into `dir` (created) and returns its path.
pub fn write_html(
    dir: &Path,
    study: &str,
    summary: &Summary,
    scores: &[ImageScores],
    gallery: &Gallery,
) -> Result<PathBuf, Error> {
    let html = report_html(study, summary, scores, gallery)?;
    std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
    let path = dir.join("report.html");
    std::fs::write(&path, html).map_err(Error::io(&path))?;
    Ok(path)
}

/// The report as one self-contained HTML page (see the [module docs](self)).
pub fn report_html(
    study: &str,
    summary: &Summary,
    scores: &[ImageScores],
    gallery: &Gallery,
) -> Result<String, Error> {
    // Cards in model order (as in the tables), then by prompt id and seed.
    let rank = |model: &str| summary.models.iter().position(|m| m == model);
    let mut sorted: Vec<&ImageScores> = scores.iter().collect();
    sorted.sort_by(|a, b| (rank(&a.model), a.sort_key()).cmp(&(rank(&b.model), b.sort_key())));
    let thresholds: Vec<String> = if summary.thresholds.is_empty() {
        vec![DEFAULT_TAU.to_owned()]
    } else {
        summary.thresholds.clone()
    };
    let tau = summary.headline_tau().unwrap_or(DEFAULT_TAU).to_owned();

    let mut out = String::with_capacity(64 * 1024);
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n");
    out.push_str(
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n",
    );
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n");
    writeln!(
        out,
        "<title>{}: identity collapse</title>\n<style>{CSS}</style>\n</head>\n<body>",
        esc(study)
    )
    .unwrap();
    out.push_str(
        "<nav><a href=\"#tables\">Tables</a> <a href=\"#figures\">Figures</a> \
         <a href=\"#gallery-section\">Gallery</a> <a href=\"#provenance\">Provenance</a></nav>\n",
    );

    // Title, the paragraph and every table of report.md, then the failures (its last section).
    out.push_str("<main>\n<section id=\"tables\">\n");
    out.push_str(&markdown_to_html(&report_md(study, summary)));
    out.push_str("</section>\n");

    provenance(&mut out, summary, &sorted);

    out.push_str("<section id=\"figures\">\n<h2>Figures</h2>\n");
    for figure in Figure::ALL {
        let svg = figure.svg(summary)?;
        let svg = match svg.find("<svg") {
            Some(start) => &svg[start..],
            None => svg.as_str(),
        };
        writeln!(
            out,
            "<figure class=\"plot\" id=\"figure-{}\">{}</figure>",
            figure.name(),
            svg.trim_end()
        )
        .unwrap();
    }
    out.push_str("</section>\n");

    gallery_section(&mut out, summary, &sorted, gallery, &thresholds, &tau);

    out.push_str("</main>\n");
    writeln!(out, "<script>\n{SCRIPT}</script>\n</body>\n</html>").unwrap();
    Ok(out)
}

/// Per model, the provenance entries (top-level keys) every one of its images has with the same
/// value; per-image entries (prompt text, output path) show on the gallery cards instead.
fn provenance(out: &mut String, summary: &Summary, sorted: &[&ImageScores]) {
    out.push_str("<section id=\"provenance\">\n<h2>Provenance</h2>\n");
    let b = &summary.bootstrap;
    writeln!(
        out,
        "<p>scrbench {}; bootstrap: {} resamples, level {}, seed {:#018x}.</p>",
        esc(env!("CARGO_PKG_VERSION")),
        b.resamples,
        b.level,
        b.seed
    )
    .unwrap();
    for model in models(summary, sorted) {
        let images: Vec<&ImageScores> = sorted
            .iter()
            .copied()
            .filter(|s| s.model == model)
            .collect();
        let mut common: Option<BTreeMap<String, serde_json::Value>> = None;
        for image in &images {
            let entries: BTreeMap<String, serde_json::Value> = match &image.provenance {
                serde_json::Value::Object(map) => {
                    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                }
                serde_json::Value::Null => BTreeMap::new(),
                other => BTreeMap::from([("provenance".to_owned(), other.clone())]),
            };
            common = Some(match common {
                None => entries,
                Some(mut c) => {
                    c.retain(|k, v| entries.get(k) == Some(v));
                    c
                }
            });
        }
        writeln!(out, "<h3>{}</h3>", esc(&model)).unwrap();
        match common.filter(|c| !c.is_empty()) {
            None => out.push_str("<p>No provenance shared by all of its images.</p>\n"),
            Some(common) => {
                out.push_str("<table class=\"provenance\"><tbody>\n");
                for (key, value) in common {
                    let text = match &value {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    writeln!(
                        out,
                        "<tr><th>{}</th><td><code>{}</code></td></tr>",
                        esc(&key),
                        esc(&text)
                    )
                    .unwrap();
                }
                out.push_str("</tbody></table>\n");
            }
        }
    }
    out.push_str("</section>\n");
}

/// Models in summary order, then any only the scores name.
fn models(summary: &Summary, sorted: &[&ImageScores]) -> Vec<String> {
    let mut models = summary.models.clone();
    for s in sorted {
        if !models.contains(&s.model) {
            models.push(s.model.clone());
        }
    }
    models
}

fn gallery_section(
    out: &mut String,
    summary: &Summary,
    sorted: &[&ImageScores],
    gallery: &Gallery,
    thresholds: &[String],
    tau: &str,
) {
    out.push_str("<section id=\"gallery-section\">\n<h2>Gallery</h2>\n");
    writeln!(
        out,
        "<p>Each generated image beside its references, with the cosine of each reference to the \
         image. A subject is <span class=\"badge\">collapsed</span> when its DINOv2 cosine is below \
         τ. Images from the paper's published scores have no per-subject cosines. {} images.</p>",
        sorted.len()
    )
    .unwrap();
    out.push_str("<form class=\"filters\" id=\"filters\">\n");
    let select = |out: &mut String, id: &str, label: &str, options: &[(String, String)]| {
        write!(out, "<label>{label} <select id=\"{id}\">").unwrap();
        out.push_str("<option value=\"\">all</option>");
        for (value, text) in options {
            write!(
                out,
                "<option value=\"{}\">{}</option>",
                esc(value),
                esc(text)
            )
            .unwrap();
        }
        out.push_str("</select></label>\n");
    };
    let model_options: Vec<(String, String)> = models(summary, sorted)
        .into_iter()
        .map(|m| (m.clone(), m))
        .collect();
    select(out, "f-model", "Model", &model_options);
    let counts: BTreeSet<usize> = sorted.iter().map(|s| s.subject_count).collect();
    let count_options: Vec<(String, String)> = counts
        .iter()
        .map(|n| (n.to_string(), n.to_string()))
        .collect();
    select(out, "f-n", "N", &count_options);
    let scene_options: Vec<(String, String)> = Scene::ALL
        .iter()
        .map(|s| (s.to_string(), s.to_string()))
        .collect();
    select(out, "f-scene", "Scene", &scene_options);
    out.push_str("<label>Collapse τ <select id=\"tau\">");
    for t in thresholds {
        let selected = if t == tau { " selected" } else { "" };
        write!(out, "<option value=\"{0}\"{selected}>{0}</option>", esc(t)).unwrap();
    }
    out.push_str("</select></label>\n");
    writeln!(
        out,
        "<output id=\"gallery-count\">{0} of {0} images shown</output>\n</form>",
        sorted.len()
    )
    .unwrap();
    writeln!(out, "<p id=\"{SELFTEST_ID}\" class=\"selftest\"></p>").unwrap();

    let tau_value: f64 = tau.parse().unwrap_or(f64::NAN);
    out.push_str("<div id=\"gallery\">\n");
    for image in sorted {
        card(out, image, gallery, tau, tau_value);
    }
    out.push_str("</div>\n</section>\n");
}

fn card(out: &mut String, image: &ImageScores, gallery: &Gallery, tau: &str, tau_value: f64) {
    let m = &image.metrics;
    writeln!(
        out,
        "<article class=\"card{}\" data-model=\"{}\" data-n=\"{}\" data-scene=\"{}\">",
        if image.is_failed() { " failed" } else { "" },
        esc(&image.model),
        image.subject_count,
        image.scene
    )
    .unwrap();
    writeln!(
        out,
        "<h3><span class=\"model\">{}</span> · <span class=\"prompt-id\">{}</span> · seed {} · \
         N={} · {}</h3>",
        esc(&image.model),
        esc(&image.prompt_id),
        image.seed,
        image.subject_count,
        image.scene
    )
    .unwrap();
    if let Some(prompt) = image.provenance.get("prompt").and_then(|p| p.as_str()) {
        writeln!(out, "<p class=\"prompt\">{}</p>", esc(prompt)).unwrap();
    }
    out.push_str("<div class=\"pair\">\n<div class=\"generated\">");
    thumbnail(out, gallery.image(image), "generated image", "gen");
    out.push_str("</div>\n");

    let with_dinov2 = m.subjects.iter().filter(|s| s.dinov2.is_some()).count();
    let collapsed = m
        .subjects
        .iter()
        .filter(|s| s.dinov2.is_some_and(|c| c < tau_value))
        .count();
    out.push_str("<ul class=\"subjects\">\n");
    for subject in &m.subjects {
        let is_collapsed = subject.dinov2.is_some_and(|c| c < tau_value);
        write!(
            out,
            "<li class=\"subject{}\"",
            if is_collapsed { " collapsed" } else { "" }
        )
        .unwrap();
        if let Some(c) = subject.dinov2 {
            write!(out, " data-dinov2=\"{c}\"").unwrap();
        }
        out.push('>');
        thumbnail(
            out,
            gallery.references.get(&subject.name).map(Vec::as_slice),
            "reference image",
            "ref",
        );
        if let Some(crop) = gallery.crop(image, &subject.name) {
            thumbnail(out, Some(crop), "matched crop", "crop");
        }
        write!(out, "<span class=\"name\">{}</span>", esc(&subject.name)).unwrap();
        for (title, value) in [
            ("DINOv2", subject.dinov2),
            ("CLIP-I", subject.clip_i),
            ("DINO", subject.dino),
            ("crop DINOv2", subject.local),
        ] {
            if let Some(v) = value {
                write!(out, "<span class=\"cos\">{title} {v:.3}</span>").unwrap();
            }
        }
        out.push_str("<span class=\"badge\">collapsed</span></li>\n");
    }
    out.push_str("</ul>\n</div>\n");

    if let Some(error) = &image.error {
        writeln!(out, "<p class=\"error\">Failed: {}</p>", esc(error)).unwrap();
    } else {
        if m.subjects.is_empty() {
            out.push_str("<p class=\"note\">No per-subject cosines.</p>\n");
        } else if with_dinov2 > 0 {
            writeln!(
                out,
                "<p class=\"collapse-count\">{collapsed}/{with_dinov2} collapsed at τ={}</p>",
                esc(tau)
            )
            .unwrap();
        }
        out.push_str("<p class=\"metrics\">");
        let mut parts = Vec::new();
        for (title, value) in [
            ("CLIP-T", m.clip_t),
            ("CLIP-I", m.clip_i),
            ("DINO", m.dino),
            ("DINOv2", m.dinov2),
        ] {
            if let Some(v) = value {
                parts.push(format!("{title} {v:.3}"));
            }
        }
        for (t, v) in &m.scr {
            parts.push(format!("SCR@{} {:.1}%", esc(t), v * 100.0));
        }
        for (t, v) in &m.local_scr {
            parts.push(format!("local SCR@{} {:.1}%", esc(t), v * 100.0));
        }
        if let Some(h) = m.homogenisation {
            parts.push(format!("homogenisation {h:.3}"));
        }
        out.push_str(&parts.join(" · "));
        out.push_str("</p>\n");
    }
    out.push_str("</article>\n");
}

fn thumbnail(out: &mut String, bytes: Option<&[u8]>, alt: &str, class: &str) {
    match bytes.and_then(|b| mime(b).map(|m| (m, b))) {
        Some((mime, bytes)) => write!(
            out,
            "<img class=\"{class}\" alt=\"{alt}\" src=\"data:{mime};base64,{}\">",
            BASE64.encode(bytes)
        )
        .unwrap(),
        None => {
            let why = if bytes.is_some() {
                "not a PNG"
            } else {
                "no image"
            };
            write!(out, "<span class=\"{class} missing\">{why}</span>").unwrap()
        }
    }
}

/// The media type of thumbnail bytes, by their signature.
fn mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else {
        None
    }
}

/// Text safe inside an element or a double-quoted attribute.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the Markdown [`report_md`] writes: `#`/`##` headings, paragraphs, pipe tables whose
/// cells escape `|` as `\|`, and `- ` lists. Nothing else occurs there, and no other Markdown
/// syntax is interpreted (the text is escaped as it is).
fn markdown_to_html(markdown: &str) -> String {
    let mut out = String::new();
    let mut lines = markdown.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim().is_empty() {
            continue;
        }
        if let Some(title) = line.strip_prefix("# ") {
            writeln!(out, "<h1>{}</h1>", esc(title)).unwrap();
        } else if let Some(title) = line.strip_prefix("## ") {
            writeln!(out, "<h2 id=\"{}\">{}</h2>", slug(title), esc(title)).unwrap();
        } else if line.starts_with('|') {
            let mut rows = vec![cells(line)];
            while let Some(next) = lines.next_if(|l| l.starts_with('|')) {
                if !next.starts_with("|---") {
                    rows.push(cells(next));
                }
            }
            out.push_str("<table class=\"grid\">\n<thead><tr>");
            for cell in &rows[0] {
                write!(out, "<th>{}</th>", esc(cell)).unwrap();
            }
            out.push_str("</tr></thead>\n<tbody>\n");
            for row in &rows[1..] {
                out.push_str("<tr>");
                for (i, cell) in row.iter().enumerate() {
                    if i == 0 {
                        write!(out, "<th>{}</th>", esc(cell)).unwrap();
                    } else {
                        write!(out, "<td>{}</td>", value_cell(cell)).unwrap();
                    }
                }
                out.push_str("</tr>\n");
            }
            out.push_str("</tbody></table>\n");
        } else if line.starts_with("- ") {
            out.push_str("<ul class=\"failed\">\n");
            let mut item = Some(line);
            while let Some(line) = item {
                let text = line.strip_prefix("- ").unwrap_or(line);
                writeln!(out, "<li>{}</li>", esc(&unescape_pipes(text))).unwrap();
                item = lines.next_if(|l| l.starts_with("- "));
            }
            out.push_str("</ul>\n");
        } else {
            writeln!(out, "<p>{}</p>", esc(&unescape_pipes(line))).unwrap();
        }
    }
    out
}

/// The cells of one Markdown table row, with `\|` turned back into `|`.
fn cells(row: &str) -> Vec<String> {
    let inner = row.trim().trim_start_matches('|');
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'|') => {
                cell.push('|');
                chars.next();
            }
            '|' => cells.push(std::mem::take(&mut cell).trim().to_owned()),
            c => cell.push(c),
        }
    }
    cells.push(cell.trim().to_owned());
    cells
}

fn unescape_pipes(text: &str) -> String {
    text.replace("\\|", "|")
}

/// A value cell, its interval (`[lo, hi]`) set apart.
fn value_cell(text: &str) -> String {
    match text.rfind(" [") {
        Some(i) if text.ends_with(']') => format!(
            "{}<span class=\"ci\">{}</span>",
            esc(&text[..i]),
            esc(&text[i..])
        ),
        _ => esc(text),
    }
}

/// An id for a heading: lowercase ASCII letters and digits, other runs as `-`.
fn slug(title: &str) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    slug.trim_matches('-').to_owned()
}

const CSS: &str = r#"
:root { font-family: "DejaVu Sans", system-ui, sans-serif; color: #1d1d1f; background: #fff; }
body { margin: 0; }
nav { position: sticky; top: 0; background: #24364b; padding: 6px 16px; z-index: 1; }
nav a { color: #fff; margin-right: 16px; text-decoration: none; }
main { padding: 8px 20px 40px; max-width: 1400px; }
h1 { margin: 12px 0 4px; }
h2 { border-bottom: 2px solid #24364b; padding-bottom: 2px; margin-top: 28px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 14px; }
th, td { border: 1px solid #c8ccd2; padding: 3px 8px; text-align: right; white-space: nowrap; }
thead th { background: #e8edf3; text-align: center; }
tbody th { background: #f4f6f8; text-align: left; }
table.provenance td, table.provenance th { text-align: left; white-space: normal; }
.ci { color: #5a6270; font-size: 12px; }
ul.failed li, .error { color: #a4161a; }
figure.plot { margin: 8px 0 20px; }
figure.plot svg { max-width: 100%; height: auto; border: 1px solid #e1e4e8; }
.filters { display: flex; flex-wrap: wrap; gap: 16px; align-items: center; background: #f4f6f8;
  padding: 8px 12px; border-radius: 6px; position: sticky; top: 30px; z-index: 1; }
.filters output { font-weight: bold; }
.selftest:empty { display: none; }
#gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 12px;
  margin-top: 12px; }
[hidden] { display: none !important; }
.card { border: 1px solid #c8ccd2; border-radius: 6px; padding: 8px 10px; background: #fbfcfd; }
.card.failed { border-color: #a4161a; background: #fff3f3; }
.card h3 { font-size: 14px; margin: 0 0 4px; }
.card .prompt { font-size: 12px; color: #3c4450; margin: 2px 0 6px; }
.pair { display: flex; gap: 10px; align-items: flex-start; }
img.gen { width: 160px; height: 160px; object-fit: cover; flex: none; }
.gen.missing { width: 160px; height: 40px; flex: none; }
img.ref, .ref.missing, img.crop { width: 44px; height: 44px; object-fit: cover; flex: none; }
img.crop { object-fit: contain; outline: 1px dashed #999; }
.missing { display: inline-flex; align-items: center; justify-content: center; background: #e8edf3;
  color: #5a6270; font-size: 11px; text-align: center; }
ul.subjects { list-style: none; margin: 0; padding: 0; font-size: 12px; flex: 1; min-width: 0;
  overflow-wrap: anywhere; }
li.subject { display: flex; flex-wrap: wrap; gap: 2px 8px; align-items: center; padding: 2px;
  border: 2px solid transparent; border-radius: 4px; }
li.subject .name { font-weight: bold; }
li.subject .badge { display: none; }
li.subject.collapsed { border-color: #d62728; background: #fde8e8; }
li.subject.collapsed .badge { display: inline; }
.badge { background: #d62728; color: #fff; border-radius: 3px; padding: 0 4px; font-size: 11px; }
.collapse-count { font-weight: bold; color: #a4161a; margin: 4px 0 0; font-size: 13px; }
.metrics, .note { font-size: 12px; color: #3c4450; margin: 4px 0 0; }
"#;

const SCRIPT: &str = r##"(function () {
  "use strict";
  var cards = Array.prototype.slice.call(document.querySelectorAll("#gallery .card"));
  var model = document.getElementById("f-model");
  var count = document.getElementById("f-n");
  var scene = document.getElementById("f-scene");
  var tau = document.getElementById("tau");
  var shown = document.getElementById("gallery-count");

  function filter() {
    var visible = 0;
    cards.forEach(function (card) {
      var keep = (model.value === "" || card.dataset.model === model.value) &&
        (count.value === "" || card.dataset.n === count.value) &&
        (scene.value === "" || card.dataset.scene === scene.value);
      card.hidden = !keep;
      if (keep) { visible += 1; }
    });
    shown.textContent = visible + " of " + cards.length + " images shown";
  }

  function mark() {
    var t = parseFloat(tau.value);
    cards.forEach(function (card) {
      var subjects = card.querySelectorAll(".subject[data-dinov2]");
      var collapsed = 0;
      Array.prototype.forEach.call(subjects, function (subject) {
        var is = parseFloat(subject.dataset.dinov2) < t;
        subject.classList.toggle("collapsed", is);
        if (is) { collapsed += 1; }
      });
      var note = card.querySelector(".collapse-count");
      if (note) {
        note.textContent = collapsed + "/" + subjects.length + " collapsed at \u03c4=" + tau.value;
      }
    });
  }

  // Cards the browser actually lays out, and collapse marks it actually shows.
  function laidOut() {
    return cards.filter(function (card) { return card.getClientRects().length > 0; }).length;
  }
  function marksShown() {
    return Array.prototype.filter.call(document.querySelectorAll("#gallery .subject .badge"),
      function (badge) { return badge.getClientRects().length > 0; }).length;
  }

  function selftest() {
    var parts = ["cards=" + cards.length];
    var initialTau = tau.value;
    function set(m, n, s) { model.value = m; count.value = n; scene.value = s; filter(); }
    function first(select) { return select.options.length > 1 ? select.options[1].value : ""; }
    set("", "", "");
    parts.push("all=" + laidOut());
    set(first(model), "", "");
    parts.push("model[" + model.value + "]=" + laidOut());
    set("", first(count), "");
    parts.push("n[" + count.value + "]=" + laidOut());
    Array.prototype.forEach.call(scene.options, function (option) {
      if (option.value !== "") {
        set("", "", option.value);
        parts.push("scene[" + option.value + "]=" + laidOut());
      }
    });
    set(first(model), first(count), first(scene));
    parts.push("combined=" + laidOut());
    set("", "", "");
    Array.prototype.forEach.call(tau.options, function (option) {
      tau.value = option.value;
      mark();
      parts.push("collapsed@" + option.value + "=" + marksShown());
    });
    tau.value = initialTau;
    mark();
    document.getElementById("selftest").textContent = "selftest ok: " + parts.join(" ");
  }

  model.addEventListener("change", filter);
  count.addEventListener("change", filter);
  scene.addEventListener("change", filter);
  tau.addEventListener("change", mark);
  filter();
  mark();
  document.documentElement.setAttribute("data-js", "ready");
  if (location.hash === "#selftest") { selftest(); }
})();
"##;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_attributes() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn table_cells_unescape_pipes() {
        assert_eq!(
            cells(r"| N | a\|b | 1.0% [0.5, 2.0] |"),
            ["N", "a|b", "1.0% [0.5, 2.0]"]
        );
        assert_eq!(
            value_cell("96.0% [93.1, 98.2]"),
            "96.0%<span class=\"ci\"> [93.1, 98.2]</span>"
        );
    }

    #[test]
    fn markdown_subset() {
        let html = markdown_to_html(
            "# t <x>\n\npara | x\n\n## Table 1: A / B\n\n| N | m |\n|---|---|\n| 2 | 0.1 |\n\n\
             ## Failed images\n\n- m / p / seed 1: a \\| b\n- two\n",
        );
        assert_eq!(
            html,
            "<h1>t &lt;x&gt;</h1>\n<p>para | x</p>\n<h2 id=\"table-1-a-b\">Table 1: A / B</h2>\n\
             <table class=\"grid\">\n<thead><tr><th>N</th><th>m</th></tr></thead>\n<tbody>\n\
             <tr><th>2</th><td>0.1</td></tr>\n</tbody></table>\n\
             <h2 id=\"failed-images\">Failed images</h2>\n<ul class=\"failed\">\n\
             <li>m / p / seed 1: a | b</li>\n<li>two</li>\n</ul>\n"
        );
    }

    #[test]
    fn thumbnails_by_signature() {
        assert_eq!(mime(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(mime(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(mime(b"GIF89a"), None);
    }
}
