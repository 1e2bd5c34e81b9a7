//! Figures drawn from a [`Summary`] with `plotters`, as SVG strings and PNG bytes.
//!
//! Each [`Figure`] is drawn once, generically over the backend, so the SVG and the PNG show the
//! same thing. Text is laid out with the DejaVu Sans font bundled by the `dejavu` crate (registered
//! with plotters' `ab_glyph` support on first use), so no system font is needed and the output is
//! the same on every machine. Models take colours in [`Summary::models`] order; the legend sits in
//! a panel to the right of the plot so it never hides data.

use std::error::Error as StdError;
use std::sync::OnceLock;

use benchmark::Scene;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::aggregate::{Metric, Summary};
use crate::error::Error;

/// The report's figures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Figure {
    /// SCR at the headline τ against the number of subjects N, one line per model, CI bands.
    ScrVsN,
    /// SCR at the headline τ per scene type, grouped bars per model, CI whiskers.
    ScrByScene,
    /// Per prompt (mean over seeds): CLIP-I against SCR at the headline τ, one colour per model.
    ClipVsScr,
}

const SIZE: (u32, u32) = (900, 520);
const LEGEND_WIDTH: u32 = 170;
const FONT: &str = "sans-serif";
const GRID: RGBColor = RGBColor(242, 242, 242);
/// SCR (in %) from which the scatter shades its points as collapsed.
const COLLAPSED: f64 = 90.0;
const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

type DrawResult = Result<(), Box<dyn StdError>>;

impl Figure {
    pub const ALL: [Figure; 3] = [Figure::ScrVsN, Figure::ScrByScene, Figure::ClipVsScr];

    /// File stem: `scr_vs_n`, `scr_by_scene`, `clip_vs_scr`.
    pub fn name(self) -> &'static str {
        match self {
            Figure::ScrVsN => "scr_vs_n",
            Figure::ScrByScene => "scr_by_scene",
            Figure::ClipVsScr => "clip_vs_scr",
        }
    }

    /// The figure as an SVG document (text as `<text>` elements).
    pub fn svg(self, summary: &Summary) -> Result<String, Error> {
        fonts().map_err(|message| self.error(message))?;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            self.draw_on(&root, summary)
                .map_err(|e| self.error(e.to_string()))?;
        }
        Ok(svg)
    }

    /// The figure as PNG bytes (8-bit RGB).
    pub fn png(self, summary: &Summary) -> Result<Vec<u8>, Error> {
        fonts().map_err(|message| self.error(message))?;
        let (w, h) = SIZE;
        let mut pixels = vec![0u8; w as usize * h as usize * 3];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
            self.draw_on(&root, summary)
                .map_err(|e| self.error(e.to_string()))?;
        }
        let mut png = Vec::new();
        image::ImageEncoder::write_image(
            image::codecs::png::PngEncoder::new(&mut png),
            &pixels,
            w,
            h,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| self.error(e.to_string()))?;
        Ok(png)
    }

    fn error(self, message: String) -> Error {
        Error::Figure {
            figure: self.name(),
            message,
        }
    }

    fn draw_on<DB: DrawingBackend>(
        self,
        root: &DrawingArea<DB, Shift>,
        summary: &Summary,
    ) -> DrawResult
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE)?;
        let (plot, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
        let tau = summary.headline_tau().unwrap_or("–").to_owned();
        let scr = Metric::scr(&tau);
        match self {
            Figure::ScrVsN => scr_vs_n(&plot, summary, &scr)?,
            Figure::ScrByScene => scr_by_scene(&plot, summary, &scr)?,
            Figure::ClipVsScr => clip_vs_scr(&plot, summary, &scr)?,
        }
        legend(&legend_area, &summary.models)?;
        if self == Figure::ClipVsScr {
            let y = 110 + 26 * summary.models.len() as i32;
            legend_area.draw(&Rectangle::new([(10, y), (28, y + 14)], collapsed_fill()))?;
            let note = format!("{} ≥ {COLLAPSED:.0}%", scr.title());
            legend_area.draw(&Text::new(note, (36, y), font(13)))?;
            legend_area.draw(&Text::new("(collapsed)", (36, y + 16), font(13)))?;
        }
        root.present()?;
        Ok(())
    }
}

fn fonts() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let fail = |_| "the bundled DejaVu Sans font does not load".to_owned();
            register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).map_err(fail)?;
            register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).map_err(fail)
        })
        .clone()
}

fn collapsed_fill() -> ShapeStyle {
    RGBColor(214, 39, 40).mix(0.08).filled()
}

fn color(model: usize) -> RGBColor {
    PALETTE[model % PALETTE.len()]
}

fn font(size: u32) -> TextStyle<'static> {
    (FONT, size).into_font().into()
}

fn legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, models: &[String]) -> DrawResult
where
    DB::ErrorType: 'static,
{
    area.draw(&Text::new("Model", (10, 60), font(16)))?;
    for (i, model) in models.iter().enumerate() {
        let y = 90 + 26 * i as i32;
        area.draw(&Rectangle::new([(10, y), (28, y + 14)], color(i).filled()))?;
        area.draw(&Text::new(model.as_str(), (36, y), font(15)))?;
    }
    Ok(())
}

fn percent(metric: &Metric) -> String {
    format!("{} (%)", metric.title())
}

fn scr_vs_n<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    summary: &Summary,
    scr: &Metric,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let counts = &summary.subject_counts;
    let (first, last) = match (counts.first(), counts.last()) {
        (Some(&a), Some(&b)) => (a as i32, b as i32),
        _ => (0, 1),
    };
    // With detection, the local SCR at the same τ as a dashed line beside each model's global one.
    let local = match scr {
        Metric::Scr(tau) if summary.local_thresholds.contains(tau) => {
            Some(Metric::LocalScr(tau.clone()))
        }
        _ => None,
    };
    let caption = match &local {
        Some(_) => format!("{} vs N (95% CI); dashed: local", scr.title()),
        None => format!("{} vs number of subjects N (95% CI)", scr.title()),
    };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(first - 1..last + 1, 0.0..100.0)?;
    chart
        .configure_mesh()
        .x_labels((last - first + 3) as usize)
        .x_desc("N (reference subjects)")
        .y_desc(percent(scr))
        .label_style(font(14))
        .light_line_style(GRID)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    for (i, model) in summary.models.iter().enumerate() {
        let stats: Vec<(i32, f64, f64, f64)> = counts
            .iter()
            .filter_map(|&n| {
                let s = summary.cell(model, Some(n), None)?.stat(scr)?;
                Some((n as i32, 100.0 * s.mean, 100.0 * s.lo, 100.0 * s.hi))
            })
            .collect();
        let band: Vec<(i32, f64)> = stats
            .iter()
            .map(|&(n, _, lo, _)| (n, lo))
            .chain(stats.iter().rev().map(|&(n, _, _, hi)| (n, hi)))
            .collect();
        chart.draw_series([Polygon::new(band, color(i).mix(0.18).filled())])?;
        let line = stats.iter().map(|&(n, mean, _, _)| (n, mean));
        chart.draw_series(LineSeries::new(line.clone(), color(i).stroke_width(2)))?;
        chart.draw_series(line.map(|p| Circle::new(p, 4, color(i).filled())))?;
        if let Some(local) = &local {
            let points: Vec<(i32, f64)> = counts
                .iter()
                .filter_map(|&n| {
                    let s = summary.cell(model, Some(n), None)?.stat(local)?;
                    Some((n as i32, 100.0 * s.mean))
                })
                .collect();
            chart.draw_series(DashedLineSeries::new(
                points.iter().copied(),
                6,
                4,
                color(i).stroke_width(2),
            ))?;
            chart.draw_series(points.into_iter().map(|p| Cross::new(p, 4, color(i))))?;
        }
    }
    Ok(())
}

fn scr_by_scene<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    summary: &Summary,
    scr: &Metric,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{} by scene type (95% CI)", scr.title()), font(20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.5..2.5, 0.0..100.0)?;
    let scene_label = |x: &f64| {
        let i = x.round();
        match Scene::ALL.get(i as usize) {
            Some(scene) if (x - i).abs() < 1e-9 && i >= 0.0 => scene.to_string(),
            _ => String::new(),
        }
    };
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(3)
        .x_label_formatter(&scene_label)
        .x_desc("Scene type")
        .y_desc(percent(scr))
        .label_style(font(14))
        .light_line_style(GRID)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    let width = 0.8 / summary.models.len().max(1) as f64;
    for (i, model) in summary.models.iter().enumerate() {
        for (s, scene) in Scene::ALL.into_iter().enumerate() {
            let Some(stat) = summary
                .cell(model, None, Some(scene))
                .and_then(|c| c.stat(scr))
            else {
                continue;
            };
            let x0 = s as f64 - 0.4 + i as f64 * width;
            let mid = x0 + width / 2.0;
            let (lo, hi) = (100.0 * stat.lo, 100.0 * stat.hi);
            let cap = width / 4.0;
            chart.draw_series([Rectangle::new(
                [(x0 + 0.01, 0.0), (x0 + width - 0.01, 100.0 * stat.mean)],
                color(i).filled(),
            )])?;
            chart.draw_series(
                [
                    vec![(mid, lo), (mid, hi)],
                    vec![(mid - cap, lo), (mid + cap, lo)],
                    vec![(mid - cap, hi), (mid + cap, hi)],
                ]
                .map(|path| PathElement::new(path, BLACK.stroke_width(1))),
            )?;
        }
    }
    Ok(())
}

fn clip_vs_scr<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    summary: &Summary,
    scr: &Metric,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let points: Vec<(usize, f64, f64)> = summary
        .prompts
        .iter()
        .filter_map(|p| {
            let model = summary.models.iter().position(|m| *m == p.model)?;
            Some((
                model,
                *p.means.get(&Metric::ClipI)?,
                100.0 * p.means.get(scr)?,
            ))
        })
        .collect();
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let (lo, hi) = if lo <= hi {
        (lo - 0.02, hi + 0.02)
    } else {
        (0.0, 1.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("CLIP-I vs {} per prompt (mean over seeds)", scr.title()),
            font(20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(lo..hi, -3.0..103.0)?;
    chart
        .configure_mesh()
        .x_desc("CLIP-I (image similarity to the references)")
        .y_desc(percent(scr))
        .label_style(font(14))
        .light_line_style(GRID)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .draw()?;
    chart.draw_series([Rectangle::new(
        [(lo, COLLAPSED), (hi, 103.0)],
        collapsed_fill(),
    )])?;
    chart.draw_series(
        points
            .iter()
            .map(|&(model, x, y)| Circle::new((x, y), 4, color(model).mix(0.75).filled())),
    )?;
    Ok(())
}
