//! Scores of generated images and the reports built from them.
//!
//! Data flows one way through this crate:
//!
//! ```text
//! embeddings ──metrics::score_image──▶ Metrics ─┐
//!                                               ├─▶ ImageScores (one per image) ──aggregate──▶ Summary ──report──▶ files
//! <model>_results.json ──paper::import──────────┘
//! ```
//!
//! - [`record`]: [`ImageScores`], the per-image record (one JSON line each in `results.jsonl`), and
//!   its [`Metrics`]; a metric whose encoder is not configured is `None`, a failed image carries its
//!   `error`.
//! - [`metrics`]: the paper's metric functions on embeddings (cosine, SCR@τ, [`score_image`]).
//! - [`paper`]: import of the paper's published per-image scores, with the scene split fixed.
//! - [`aggregate`](mod@aggregate): plain means per model × subject count × scene, with seeded percentile-bootstrap
//!   confidence intervals that resample prompts ([`bootstrap`] holds the PRNG and quantiles).
//! - [`report`]: pure writers from a [`Summary`] to `results.jsonl`, `summary.csv`, `report.md`,
//!   and [`figures`] (SVG strings and PNG bytes); [`write_report`] writes them all into a folder.

pub mod aggregate;
pub mod bootstrap;
mod error;
pub mod figures;
pub mod html;
pub mod metrics;
pub mod paper;
pub mod record;
pub mod report;

pub use aggregate::{Cell, Failed, Metric, PromptPoint, Stat, Summary, aggregate};
pub use bootstrap::Bootstrap;
pub use error::{Error, MetricError};
pub use html::{Gallery, HtmlReportFiles, report_html, write_html, write_report_html};
pub use metrics::{Embeddings, Reference, cosine, score_image, scr};
pub use paper::import_paper_results;
pub use record::{ImageScores, Metrics, SubjectScores, tau_key};
pub use report::{ReportFiles, ReportOptions, import_and_report, write_report};

/// Result of this crate's fallible functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
