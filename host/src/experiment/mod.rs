//! `otkd experiment`: the research question answered by one resumable command.
//!
//! - [`plan`]: the run grid (presets, overrides, step budgets);
//! - [`run`]: resumable execution of the runs, per-query test ranks, the anchors;
//! - [`convergence`]: steps and seconds to 90% / 95% of a run's own final dev R@1, AUC;
//! - [`stats`]: mean ± sd, t-based CI, the paired bootstrap over queries, Holm's correction;
//! - [`probe`]: the multimodal (X -> image) ridge probe;
//! - [`summary`], [`report`], [`plots`]: `summary.json`, `report.md` and the SVG/PNG plots.
//!
//! Layout of an experiment directory: `runs/<id>/` (ordinary training runs plus
//! `evaluation.json`), `anchors/<lang>.json`, `summary.json`, `report.md`, `*.svg`, `*.png`.

pub mod convergence;
pub mod plan;
pub mod plots;
pub mod probe;
pub mod report;
pub mod run;
pub mod stats;
pub mod summary;

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, Result};

use crate::distill::config::TrainConfig;
use crate::paths::write_atomically;
use plan::RunSpec;
use run::{Execution, Materials, Observer};

/// What an experiment produced.
pub enum ExperimentOutcome {
    /// Every run finished; the report is written.
    Reported(Box<summary::Summary>),
    /// Interrupted during a run; rerunning the command continues it.
    Interrupted {
        /// The run's id.
        run: String,
        /// Its step.
        step: usize,
    },
}

/// Runs (or continues) every run of `specs` in `out`, then writes the anchors, `summary.json`,
/// `report.md` and the plots. `wall_seconds` is shown in the report when given (the time of
/// this invocation is measured by the caller).
pub fn run_experiment(
    out: &Path,
    preset: &str,
    specs: &[RunSpec],
    base: &TrainConfig,
    materials: &mut dyn Materials,
    interrupt: &AtomicBool,
    observer: &mut dyn Observer,
) -> Result<ExperimentOutcome> {
    let clock = std::time::Instant::now();
    std::fs::create_dir_all(out.join("runs")).with_context(|| format!("creating {}", out.display()))?;
    let records = match run::execute(out, specs, base, materials, interrupt, observer)? {
        Execution::Done(records) => records,
        Execution::Interrupted { run, step } => return Ok(ExperimentOutcome::Interrupted { run, step }),
    };
    let mut langs: Vec<_> = specs.iter().map(|s| s.lang).collect();
    langs.sort();
    langs.dedup();
    let mut anchors = Vec::new();
    for lang in langs {
        observer.note(&format!("anchors for {lang}"));
        anchors.push(run::anchors(out, lang, base, materials)?);
    }
    let summary = summary::summarise(preset, base, &records, anchors);
    let json = serde_json::to_string_pretty(&summary)?;
    write_atomically(&out.join("summary.json"), |tmp| std::fs::write(tmp, &json))?;
    observer.note("plots");
    let plots = plots::write_plots(out, &summary)?;
    let md = report::render(&summary, &plots, Some(clock.elapsed().as_secs_f64()));
    write_atomically(&out.join("report.md"), |tmp| std::fs::write(tmp, &md))?;
    Ok(ExperimentOutcome::Reported(Box::new(summary)))
}
