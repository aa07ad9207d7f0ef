//! `otkd experiment`: resolve inputs, load the English teacher outputs once, build the grid, run
//! it with progress (run i of n, the run's bar, time left), then print the report's answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result, bail};
use otkd_runtime::Scoring;

use super::{
    Inputs, Interrupted, cached_english, cached_texts, open_cache, open_source, open_teacher, print_json,
    progress, split_index,
};
use crate::cli::{ExperimentArgs, MethodArg, TrainArgs};
use crate::data::{Bitext, Lang, Source, Split};
use crate::distill::config::TrainConfig;
use crate::distill::data::TrainData;
use crate::distill::run_dir::{CheckpointKind, EvalRecord, RunDir};
use crate::distill::trainer::Progress;
use crate::eval::baseline;
use crate::eval::metrics::both_directions;
use crate::experiment::plan::{Budget, ExperimentPreset, PlanRequest, RunSpec, plan};
use crate::experiment::probe::ImageProbe;
use crate::experiment::run::{ExternalAnchors, Materials, Observer, Prepared, run_dir};
use crate::experiment::{ExperimentOutcome, run_experiment};
use crate::export::{Answer, BlobBudget, HostRuntime, answer, build_blob, write_blob, write_texts};
use crate::teacher::cache::TeacherCache;
use crate::teacher::{Teacher, TeacherOutputs};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// The grid a command line asks for.
pub fn plan_request(args: &ExperimentArgs, source: &Source) -> Result<PlanRequest> {
    // A user's bitext: its languages are the grid's unless --langs picks among them.
    let langs = match source {
        Source::Bitext(_) => Some(args.langs.clone().unwrap_or_else(|| source.langs())),
        Source::Multi30k(_) => args.langs.clone(),
    };
    let pairs = args.pairs.as_ref().map(|list| list.iter().map(|p| p.count()).collect());
    Ok(PlanRequest {
        preset: args.preset.into(),
        langs: langs.map(dedup),
        methods: dedup(args.methods.iter().map(|&m| m.into()).collect()),
        starts: dedup(args.inits.iter().map(|&s| s.into()).collect()),
        seeds: args.seeds,
        pairs,
        budget_override: args.steps.map(|steps| Budget {
            steps: steps as usize,
            eval_every: args.eval_every.map_or((steps as usize / 10).max(1), |e| e as usize),
        }),
    })
}

/// `v` without repeats, first occurrence kept.
fn dedup<T: PartialEq + Copy>(mut v: Vec<T>) -> Vec<T> {
    let mut seen = Vec::new();
    v.retain(|x| {
        let new = !seen.contains(x);
        seen.push(*x);
        new
    });
    v
}

/// The settings every run shares: `otkd train`'s defaults with the experiment's loss flags.
fn base_config(args: &ExperimentArgs, dim: usize) -> Result<TrainConfig> {
    let mut train = TrainArgs::defaults(MethodArg::Kd);
    train.kd_variant = args.kd_variant;
    train.english_weight = args.english_weight;
    train.config(Lang::AY, dim)
}

/// Language, subset size, and the seed when the subset depends on it.
type PreparedKey = (Lang, Option<usize>, u64);

struct Real<'a> {
    data: &'a Source,
    teacher: &'a Teacher,
    cache: &'a TeacherCache,
    batch: usize,
    train_en: Arc<TeacherOutputs>,
    val_en: TeacherOutputs,
    test_en: TeacherOutputs,
    bitexts: HashMap<Lang, Rc<[Bitext; 3]>>,
    /// The last prepared material: runs are ordered so that consecutive runs share it.
    prepared: Option<(PreparedKey, Prepared)>,
    probe: Option<Option<Rc<ImageProbe>>>,
}

impl Real<'_> {
    fn bitexts(&mut self, lang: Lang) -> Result<Rc<[Bitext; 3]>> {
        if let Some(b) = self.bitexts.get(&lang) {
            return Ok(b.clone());
        }
        let b = Rc::new([
            self.data.bitext(Split::Train, lang)?,
            self.data.bitext(Split::Dev, lang)?,
            self.data.bitext(Split::Test, lang)?,
        ]);
        for s in b.iter().filter(|s| !s.skipped.is_empty()) {
            eprintln!("{}.{}: skipped {} pair(s) with an empty side", s.split, s.lang, s.skipped.len());
        }
        self.bitexts.insert(lang, b.clone());
        Ok(b)
    }
}

impl Materials for Real<'_> {
    fn prepare(&mut self, config: &TrainConfig) -> Result<Prepared> {
        // The subset depends on the seed only when it is a subset.
        let key = (config.lang, config.pairs, if config.pairs.is_some() { config.seed } else { 0 });
        if let Some((k, p)) = &self.prepared
            && *k == key
        {
            return Ok(p.clone());
        }
        self.prepared = None;
        let b = self.bitexts(config.lang)?;
        let data = TrainData::prepare(
            config,
            &b[0],
            self.train_en.clone(),
            (&b[1], &self.val_en),
            (&b[2], &self.test_en),
        )?;
        let prepared = Prepared { data: Rc::new(data), test_lines: Rc::new(b[2].lines()) };
        self.prepared = Some((key, prepared.clone()));
        Ok(prepared)
    }

    fn external_anchors(&mut self, lang: Lang) -> Result<ExternalAnchors> {
        let b = self.bitexts(lang)?;
        let (train, test) = (&b[0], &b[2]);
        let x_texts: Vec<String> = test.x().into_iter().map(str::to_string).collect();
        let name = self.data.x_cache_name(Split::Test, lang);
        let (x_out, _) = cached_texts(self.teacher, self.cache, &name, &x_texts, self.batch, false)?;
        let lines = test.lines();
        let en_rows = self.test_en.embeddings_of(&lines);
        let probe = self.probe()?;
        Ok(ExternalAnchors {
            teacher_zero_shot: Some(both_directions(&x_out.embeddings, &en_rows, self.test_en.dim)),
            tfidf: Some(baseline::tfidf_both_directions(train, test)),
            teacher_zero_shot_probe: probe.as_ref().map(|p| p.evaluate(&x_out.embeddings, &lines)),
            teacher_english_probe: probe.as_ref().map(|p| p.evaluate(&en_rows, &lines)),
        })
    }

    fn probe(&mut self) -> Result<Option<Rc<ImageProbe>>> {
        if let Some(p) = &self.probe {
            return Ok(p.clone());
        }
        let features = match self.data {
            Source::Multi30k(data) => data.test_image_features().map_err(|e| e.to_string()),
            Source::Bitext(_) => Err("a bitext has no images".to_string()),
        };
        let probe = match features {
            Ok(f) => {
                Some(Rc::new(ImageProbe::fit(&self.test_en.embeddings, self.test_en.dim, &f.data, f.cols)?))
            }
            Err(reason) => {
                eprintln!("note: the image-feature probe is skipped ({reason})");
                None
            }
        };
        self.probe = Some(probe.clone());
        Ok(probe)
    }
}

/// Progress: a header line per run (run i of n, time left) and the run's step bar.
struct Shown {
    bar: Option<indicatif::ProgressBar>,
    header: String,
    last_r1: f64,
}

fn minutes(seconds: f64) -> String {
    if seconds < 90.0 { format!("{seconds:.0} s") } else { format!("{:.0} min", seconds / 60.0) }
}

impl Observer for Shown {
    fn start_run(&mut self, index: usize, total: usize, spec: &RunSpec, from_step: usize, eta: Option<f64>) {
        let left = eta.map_or("time left: measuring".into(), |s| format!("about {} left", minutes(s)));
        let resumed = if from_step > 0 { format!(", resuming at step {from_step}") } else { String::new() };
        self.header = format!("run {} of {total}: {}{resumed}; {left}", index + 1, spec.id());
        eprintln!("{}", self.header);
        let bar = progress::steps(spec.budget.steps, from_step);
        self.last_r1 = f64::NAN;
        self.bar = Some(bar);
    }

    fn progress(&mut self) -> &mut dyn Progress {
        self
    }

    fn end_run(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn skipped(&mut self, index: usize, total: usize, spec: &RunSpec) {
        eprintln!("run {} of {total}: {} finished earlier, kept", index + 1, spec.id());
    }

    fn note(&mut self, message: &str) {
        eprintln!("{message}");
    }
}

impl Progress for Shown {
    fn step(&mut self, step: usize, loss: f64) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            bar.set_message(format!("loss {loss:.4} dev R@1 {:.3}", self.last_r1));
        }
    }

    fn eval(&mut self, record: &EvalRecord) {
        self.last_r1 = record.dev_r1;
        if let Some(bar) = &self.bar {
            bar.set_position(record.step as u64);
            if bar.is_hidden() && record.step > 0 {
                eprintln!("  step {:>5}  dev R@1 {:.4}", record.step, record.dev_r1);
            }
        }
    }
}

pub fn run(inputs: &Inputs, args: &ExperimentArgs) -> Result<()> {
    if args.langs.as_ref().is_some_and(|l| l.iter().any(|l| l.includes(Lang::EN))) {
        bail!("--langs: en is the pivot language; pick languages to distil into");
    }
    if !args.source.is_bitext()
        && let Some(other) = args.langs.iter().flatten().find(|l| !Lang::MULTI30K.contains(l))
    {
        bail!(
            "--langs {other}: Multi30k has no {other} pairs (it has de, fr, es, cs, ay, gn, qu); give your own with --bitext {other}=FILE"
        );
    }
    let single = args.langs.as_ref().filter(|l| l.len() == 1).map(|l| l[0]);
    let data = open_source(inputs, &args.source, single)?;
    let request = plan_request(args, &data)?;
    let specs = plan(&request);
    if specs.is_empty() {
        bail!("the grid is empty: --langs, --methods and --inits leave no run");
    }
    let preset = match ExperimentPreset::from(args.preset) {
        ExperimentPreset::Quick => "quick",
        ExperimentPreset::Full => "full",
    };
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from("results").join(preset));
    // The report names budgets that are not the preset's.
    let label = match args.steps {
        Some(steps) => format!("{preset}, every run {steps} steps (--steps)"),
        None => preset.to_string(),
    };
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let base = base_config(args, teacher.dim())?;
    let batch = args.teacher_batch as usize;
    eprintln!("{} runs -> {}", specs.len(), out.display());
    let (_, train_en, _) = cached_english(&teacher, &cache, &data, Split::Train, batch, true)?;
    let (_, val_en, _) = cached_english(&teacher, &cache, &data, Split::Dev, batch, false)?;
    let (_, test_en, _) = cached_english(&teacher, &cache, &data, Split::Test, batch, false)?;
    let mut materials = Real {
        data: &data,
        teacher: &teacher,
        cache: &cache,
        batch,
        train_en: Arc::new(train_en),
        val_en,
        test_en,
        bitexts: HashMap::new(),
        prepared: None,
        probe: None,
    };
    if let Err(e) = ctrlc::set_handler(|| INTERRUPTED.store(true, Ordering::SeqCst)) {
        eprintln!("warning: Ctrl-C will stop without saving a checkpoint ({e})");
    }
    let mut shown = Shown { bar: None, header: String::new(), last_r1: f64::NAN };
    match run_experiment(&out, &label, &specs, &base, &mut materials, &INTERRUPTED, &mut shown)? {
        ExperimentOutcome::Interrupted { run, step } => Err(Interrupted {
            what: format!(
                "run {run} at step {step}; its checkpoint is saved. Rerun the same command to continue"
            ),
        }
        .into()),
        ExperimentOutcome::Reported(summary) => {
            let shipped = if args.no_export { None } else { Some(export_best(inputs, &data, &out, &specs)?) };
            if args.json {
                return print_json(&summary);
            }
            let report = std::fs::read_to_string(out.join("report.md"))?;
            let answer = report.split("\n## ").next().unwrap_or("");
            outln!("{answer}");
            outln!("report: {}", out.join("report.md").display());
            if let Some(shipped) = shipped {
                print_shipped(&shipped)?;
            }
            Ok(())
        }
    }
}

/// How many test captions of the exported student's language are asked as example queries.
const EXAMPLE_QUERIES: usize = 3;

/// The grid's best student as a blob, and example answers of the int8 runtime.
struct Shipped {
    run: String,
    dev_r1: f64,
    blob: PathBuf,
    budget: BlobBudget,
    examples: Vec<Example>,
}

struct Example {
    query: String,
    /// The test line the query is a caption of: the right answer.
    truth: u32,
    /// The top 3 by CSLS.
    hits: Vec<Answer>,
}

/// The whole path from bitext to a device answer: the grid's first language's best student
/// (highest dev R@1 of any run's best-dev checkpoint; test data never chooses) is quantized to
/// `out/best.otkd` with the test captions as its CSLS index, and the int8 runtime answers that
/// language's first test captions.
fn export_best(inputs: &Inputs, data: &Source, out: &Path, specs: &[RunSpec]) -> Result<Shipped> {
    let lang = specs.first().map(|s| s.lang).context("no run")?;
    let mut best: Option<(f64, &RunSpec)> = None;
    for spec in specs.iter().filter(|s| s.lang == lang) {
        let dev_r1 = RunDir::new(run_dir(out, spec)).final_report()?.best.dev_r1;
        if best.is_none_or(|(r, _)| dev_r1 > r) {
            best = Some((dev_r1, spec));
        }
    }
    let (dev_r1, spec) = best.context("no run of the first language")?;
    let blob = out.join("best.otkd");
    let trained = RunDir::new(run_dir(out, spec)).load_student(CheckpointKind::BestDev)?;
    let (index, documents) = split_index(
        inputs,
        data,
        Split::Test,
        lang,
        (&trained.student, trained.projection.as_ref()),
        Scoring::Csls,
    )?;
    let bytes = build_blob(&trained.student, lang.code(), Some(index))?;
    let budget = write_blob(&blob, &bytes)?;
    write_texts(&blob, &documents)?;
    let mut runtime = HostRuntime::new(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", blob.display()))?;
    let test = data.bitext(Split::Test, lang)?;
    let mut examples = Vec::new();
    for pair in test.pairs.iter().take(EXAMPLE_QUERIES) {
        examples.push(Example {
            query: pair.x.clone(),
            truth: u32::try_from(pair.line)?,
            hits: answer(&mut runtime, &pair.x, 3, Scoring::Csls, Some(&documents))?,
        });
    }
    Ok(Shipped { run: spec.id(), dev_r1, blob, budget, examples })
}

fn print_shipped(s: &Shipped) -> Result<()> {
    outln!(
        "\nshipped: {} (best-dev checkpoint of {}, dev R@1 {:.3}), {} bytes; the int8 runtime answers (CSLS, top 3):",
        s.blob.display(),
        s.run,
        s.dev_r1,
        s.budget.total_bytes
    );
    for e in &s.examples {
        outln!("  {:?}", e.query);
        for a in &e.hits {
            let mark = if a.id == e.truth { "  <- its caption" } else { "" };
            outln!("    {:>5}  {:+.3}  {}{mark}", a.id, a.score, a.text.as_deref().unwrap_or(""));
        }
    }
    outln!("ask it yourself: cargo run --release -p otkd-host -- query --blob {} \"...\"", s.blob.display());
    Ok(())
}
