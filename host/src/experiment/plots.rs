//! The report's plots, each written as SVG and PNG with plotters. Text is drawn with the DejaVu
//! Sans font bundled by the `dejavu` crate through plotters' `ab_glyph` feature, so no system font
//! or fontconfig/freetype library is needed.
//!
//! OT is always orange and KD always blue; a line is the mean over seeds, its band the seeds'
//! minimum to maximum.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;

use super::plan::{Group, Start};
use super::summary::{Cell, Summary};
use crate::data::Lang;
use crate::distill::losses::Method;

/// OT's colour.
pub const OT_COLOUR: RGBColor = RGBColor(230, 115, 0);
/// KD's colour.
pub const KD_COLOUR: RGBColor = RGBColor(31, 100, 190);

fn colour(m: Method) -> RGBColor {
    match m {
        Method::Ot => OT_COLOUR,
        Method::Kd => KD_COLOUR,
    }
}

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The bundled font is a valid TTF; if registration failed, text would be missing from
        // the PNGs, which `plots_are_written` would catch.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular());
    });
}

/// `(x, mean, min, max)` of one evaluation index over seeds.
type BandPoint = (f64, f64, f64, f64);

/// Mean, min and max over seeds at each evaluation index (seeds share evaluation steps; a seed
/// with fewer points contributes to the indices it has). `x` is the step or the mean seconds.
fn band(cell: &Cell, by_seconds: bool) -> Vec<BandPoint> {
    let longest = cell.curves.iter().map(Vec::len).max().unwrap_or(0);
    (0..longest)
        .filter_map(|i| {
            let pts: Vec<_> = cell.curves.iter().filter_map(|c| c.get(i)).collect();
            if pts.is_empty() {
                return None;
            }
            let n = pts.len() as f64;
            let x =
                if by_seconds { pts.iter().map(|p| p.seconds).sum::<f64>() / n } else { pts[0].step as f64 };
            let ys: Vec<f64> = pts.iter().map(|p| p.r1).collect();
            let mean = ys.iter().sum::<f64>() / n;
            let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            Some((x, mean, lo, hi))
        })
        .collect()
}

type DrawResult = Result<(), String>;

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// A log axis labels 1, 2 and 5 times a power of ten only (every tick's label collides).
fn log_axis_label(x: &f64) -> String {
    let lead = x / 10f64.powf(x.log10().floor());
    let shown = [1.0, 2.0, 5.0].iter().any(|l| (lead - l).abs() < 1e-6);
    if shown { format!("{x:.0}") } else { String::new() }
}

/// The methods' legend, in the lower right corner of every panel.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> DrawResult {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(err)
}

fn curves_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    s: &Summary,
    lang: Lang,
    start: Start,
    by_seconds: bool,
) -> DrawResult {
    let cells: Vec<&Cell> =
        s.cells.iter().filter(|c| c.group == Group::Main && c.lang == lang && c.start == start).collect();
    let bands: Vec<(Method, Vec<BandPoint>)> =
        cells.iter().map(|c| (c.method, band(c, by_seconds))).collect();
    let x_max = bands.iter().flat_map(|(_, b)| b.iter().map(|p| p.0)).fold(1e-9, f64::max);
    let y_min = bands.iter().flat_map(|(_, b)| b.iter().map(|p| p.2)).fold(1.0, f64::min);
    let y_max = bands.iter().flat_map(|(_, b)| b.iter().map(|p| p.3)).fold(0.0, f64::max);
    let pad = ((y_max - y_min) * 0.05).max(0.005);
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{} ({lang}), {start} start", lang.name()), ("sans-serif", 18))
        .margin(8)
        .margin_right(24)
        .x_label_area_size(36)
        .y_label_area_size(62)
        .build_cartesian_2d(0f64..x_max, (y_min - pad).max(0.0)..(y_max + pad).min(1.0))
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(if by_seconds { "training seconds" } else { "step" })
        .x_label_formatter(&|x: &f64| format!("{x:.0}"))
        .y_desc("dev X→en R@1")
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(err)?;
    for (method, b) in &bands {
        let c = colour(*method);
        let polygon: Vec<(f64, f64)> =
            b.iter().map(|p| (p.0, p.3)).chain(b.iter().rev().map(|p| (p.0, p.2))).collect();
        chart.draw_series(std::iter::once(Polygon::new(polygon, c.mix(0.2)))).map_err(err)?;
        chart
            .draw_series(LineSeries::new(b.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))
            .map_err(err)?
            .label(super::report::method_name(*method))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
    }
    legend(&mut chart)?;
    Ok(())
}

fn panels(s: &Summary) -> (Vec<Lang>, Vec<Start>) {
    let mut langs: Vec<Lang> = Vec::new();
    for c in s.cells.iter().filter(|c| c.group == Group::Main) {
        if !langs.contains(&c.lang) {
            langs.push(c.lang);
        }
    }
    (langs, super::report::starts_present(s))
}

fn draw_curves<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    s: &Summary,
    by_seconds: bool,
) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let (langs, starts) = panels(s);
    let areas = root.split_evenly((langs.len().max(1), starts.len().max(1)));
    for (i, lang) in langs.iter().enumerate() {
        for (j, start) in starts.iter().enumerate() {
            curves_panel(&areas[i * starts.len() + j], s, *lang, *start, by_seconds)?;
        }
    }
    root.present().map_err(err)
}

fn draw_final<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, s: &Summary) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let starts = super::report::starts_present(s);
    let areas = root.split_evenly((1, starts.len().max(1)));
    for (area, start) in areas.iter().zip(&starts) {
        let cells: Vec<&Cell> = s
            .cells
            .iter()
            .filter(|c| c.start == *start && c.pairs.is_none() && c.group != Group::Sweep)
            .collect();
        let mut langs: Vec<Lang> = Vec::new();
        for c in &cells {
            if !langs.contains(&c.lang) {
                langs.push(c.lang);
            }
        }
        let lo = cells.iter().map(|c| c.last.x_to_en.r1.mean - c.last.x_to_en.r1.sd).fold(1.0, f64::min);
        let hi = cells.iter().map(|c| c.last.x_to_en.r1.mean + c.last.x_to_en.r1.sd).fold(0.0, f64::max);
        let pad = ((hi - lo) * 0.1).max(0.01);
        let labels = langs.clone();
        let mut chart = ChartBuilder::on(area)
            .caption(format!("final test X→en R@1, {start} start (last checkpoint)"), ("sans-serif", 18))
            .margin(8)
            .x_label_area_size(36)
            .y_label_area_size(62)
            .build_cartesian_2d(-0.5f64..(langs.len() as f64 - 0.5), (lo - pad).max(0.0)..(hi + pad).min(1.0))
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_labels(langs.len().max(1))
            .x_label_formatter(&|x: &f64| {
                let i = x.round();
                if (x - i).abs() < 0.01 && i >= 0.0 {
                    labels.get(i as usize).map_or(String::new(), |l| l.to_string())
                } else {
                    String::new()
                }
            })
            .disable_x_mesh()
            .y_desc("test X→en R@1 (mean ± sd)")
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (method, offset) in [(Method::Ot, -0.12), (Method::Kd, 0.12)] {
            let c = colour(method);
            let pts: Vec<(f64, f64, f64)> = cells
                .iter()
                .filter(|cell| cell.method == method)
                .filter_map(|cell| {
                    let i = langs.iter().position(|l| *l == cell.lang)? as f64 + offset;
                    let m = cell.last.x_to_en.r1;
                    Some((i, m.mean, m.sd))
                })
                .collect();
            chart
                .draw_series(
                    pts.iter().map(|&(x, m, sd)| ErrorBar::new_vertical(x, m - sd, m, m + sd, c.filled(), 8)),
                )
                .map_err(err)?;
            chart
                .draw_series(pts.iter().map(|&(x, m, _)| Circle::new((x, m), 5, c.filled())))
                .map_err(err)?
                .label(super::report::method_name(method))
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, c.filled()));
        }
        legend(&mut chart)?;
    }
    root.present().map_err(err)
}

fn draw_sweep<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, s: &Summary) -> DrawResult {
    root.fill(&WHITE).map_err(err)?;
    let mut langs: Vec<Lang> = Vec::new();
    for c in s.cells.iter().filter(|c| c.group == Group::Sweep) {
        if !langs.contains(&c.lang) {
            langs.push(c.lang);
        }
    }
    let starts = super::report::starts_present(s);
    let areas = root.split_evenly((starts.len().max(1), langs.len().max(1)));
    for (i, start) in starts.iter().enumerate() {
        for (j, lang) in langs.iter().enumerate() {
            let area = &areas[i * langs.len() + j];
            let cells: Vec<&Cell> = s
                .cells
                .iter()
                .filter(|c| {
                    c.lang == *lang
                        && c.start == *start
                        && (c.group == Group::Sweep || (c.group == Group::Main))
                })
                .collect();
            let x_max = cells.iter().map(|c| c.train_pairs as f64).fold(10.0, f64::max) * 1.3;
            let x_min =
                cells.iter().map(|c| c.train_pairs as f64).fold(f64::INFINITY, f64::min).min(x_max / 2.0)
                    / 1.3;
            let lo = cells.iter().map(|c| c.last.x_to_en.r1.mean - c.last.x_to_en.r1.sd).fold(1.0, f64::min);
            let hi = cells.iter().map(|c| c.last.x_to_en.r1.mean + c.last.x_to_en.r1.sd).fold(0.0, f64::max);
            let pad = ((hi - lo) * 0.1).max(0.01);
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{} ({lang}), {start} start", lang.name()), ("sans-serif", 18))
                .margin(8)
                .x_label_area_size(36)
                .y_label_area_size(62)
                .build_cartesian_2d(
                    (x_min.max(1.0)..x_max).log_scale(),
                    (lo - pad).max(0.0)..(hi + pad).min(1.0),
                )
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("training pairs (log scale)")
                .y_desc("test X→en R@1")
                .x_label_formatter(&log_axis_label)
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(err)?;
            for method in [Method::Ot, Method::Kd] {
                let c = colour(method);
                let mut pts: Vec<(f64, f64, f64)> = cells
                    .iter()
                    .filter(|cell| cell.method == method)
                    .map(|cell| (cell.train_pairs as f64, cell.last.x_to_en.r1.mean, cell.last.x_to_en.r1.sd))
                    .collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                chart
                    .draw_series(LineSeries::new(pts.iter().map(|p| (p.0, p.1)), c.stroke_width(2)))
                    .map_err(err)?;
                chart
                    .draw_series(
                        pts.iter()
                            .map(|&(x, m, sd)| ErrorBar::new_vertical(x, m - sd, m, m + sd, c.filled(), 8)),
                    )
                    .map_err(err)?
                    .label(super::report::method_name(method))
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
            }
            legend(&mut chart)?;
        }
    }
    root.present().map_err(err)
}

/// Writes `dir/<stem>.svg` and `dir/<stem>.png` with the same drawing function.
macro_rules! both_formats {
    ($dir:expr, $stem:expr, $size:expr, $draw:ident ( $($arg:expr),* )) => {{
        let svg = $dir.join(format!("{}.svg", $stem));
        $draw(SVGBackend::new(&svg, $size).into_drawing_area() $(, $arg)*).map_err(|e| anyhow!("{}: {e}", svg.display()))?;
        let png = $dir.join(format!("{}.png", $stem));
        $draw(BitMapBackend::new(&png, $size).into_drawing_area() $(, $arg)*).map_err(|e| anyhow!("{}: {e}", png.display()))?;
    }};
}

/// Draws every plot the summary has data for into `dir`; returns `(stem, caption)` of each.
pub fn write_plots(dir: &Path, s: &Summary) -> Result<Vec<(&'static str, &'static str)>> {
    register_font();
    let mut written = Vec::new();
    let (langs, starts) = panels(s);
    if !langs.is_empty() {
        let size = (520 * starts.len().max(1) as u32, 340 * langs.len() as u32);
        both_formats!(dir, "dev_r1_vs_step", size, draw_curves(s, false));
        written.push(("dev_r1_vs_step", "dev R@1 against step"));
        both_formats!(dir, "dev_r1_vs_seconds", size, draw_curves(s, true));
        written.push(("dev_r1_vs_seconds", "dev R@1 against training seconds"));
        both_formats!(dir, "final_test_r1", (560 * starts.len().max(1) as u32, 380), draw_final(s));
        written.push(("final_test_r1", "final test R@1 by language and method"));
    }
    let sweep_langs = {
        let mut l: Vec<Lang> = s.cells.iter().filter(|c| c.group == Group::Sweep).map(|c| c.lang).collect();
        l.sort();
        l.dedup();
        l.len()
    };
    if sweep_langs > 0 {
        let size = (440 * sweep_langs as u32, 340 * starts.len().max(1) as u32);
        both_formats!(dir, "r1_vs_pairs", size, draw_sweep(s));
        written.push(("r1_vs_pairs", "test R@1 against bitext size"));
    }
    Ok(written)
}
