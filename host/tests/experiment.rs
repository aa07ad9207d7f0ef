//! The experiment machinery end to end on a synthetic bitext (tiny budgets, seconds): a grid of
//! OT and KD runs from both starts with a bitext sweep, interrupted and continued, then rerun
//! without redoing anything; report.md, summary.json and the plots are written.

use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};

use otkd::data::{Bitext, Lang, Split};
use otkd::distill::config::{Start, TrainConfig};
use otkd::distill::data::TrainData;
use otkd::distill::losses::{KdVariant, Method};
use otkd::distill::run_dir::EvalRecord;
use otkd::distill::trainer::Progress;
use otkd::eval::baseline;
use otkd::experiment::plan::{Budget, ExperimentPreset, PlanRequest, RunSpec, plan};
use otkd::experiment::probe::ImageProbe;
use otkd::experiment::run::{ExternalAnchors, Materials, Observer, Prepared};
use otkd::experiment::{ExperimentOutcome, run_experiment};
use otkd::rng::SplitMix64;
use otkd::teacher::TeacherOutputs;
use otkd::testing::{DIM, synthetic};
use otkd_runtime::TokenizerConfig;

/// The shared synthetic configuration, smaller still, with the experiment's loss settings
/// (InfoNCE, no English term) and a ridge start (each run's start comes from its spec).
fn base() -> TrainConfig {
    let mut c = otkd::testing::config(Method::Kd, 1);
    c.student.tokenizer = TokenizerConfig { buckets: 1024, max_words: 16, ..TokenizerConfig::DEFAULT };
    c.student.dim = 16;
    c.student.ffn = 32;
    c.optimizer.warmup_steps = 2;
    c.loss.kd_variant = KdVariant::Infonce;
    c.loss.english_weight = 0.0;
    c.seed = 0;
    c.pairs = None;
    c.eval_every = 1;
    c.start = Start::Ridge;
    c
}

struct Synthetic {
    train: (Bitext, Rc<TeacherOutputs>),
    dev: (Bitext, TeacherOutputs),
    test: (Bitext, TeacherOutputs),
    images: Vec<f32>,
    prepared_count: usize,
}

impl Synthetic {
    fn new() -> Self {
        let (train, train_t) = synthetic(160, 1, Split::Train);
        let test = synthetic(40, 3, Split::Test);
        // "Images": a fixed linear function of the English embedding, 24 wide.
        let map = SplitMix64::new(5, "image-map").normal_vec(DIM * 24, 1.0);
        let images = (0..40)
            .flat_map(|l| {
                let e = &test.1.embeddings[l * DIM..(l + 1) * DIM];
                (0..24).map(|j| (0..DIM).map(|i| e[i] * map[i * 24 + j]).sum::<f32>()).collect::<Vec<_>>()
            })
            .collect();
        Self {
            train: (train, Rc::new(train_t)),
            dev: synthetic(40, 2, Split::Dev),
            test,
            images,
            prepared_count: 0,
        }
    }
}

impl Materials for Synthetic {
    fn prepare(&mut self, config: &TrainConfig) -> anyhow::Result<Prepared> {
        self.prepared_count += 1;
        let data = TrainData::prepare(
            config,
            &self.train.0,
            (*self.train.1).clone(),
            (&self.dev.0, &self.dev.1),
            (&self.test.0, &self.test.1),
        )?;
        Ok(Prepared { data: Rc::new(data), test_lines: Rc::new(self.test.0.lines()) })
    }

    fn external_anchors(&mut self, _lang: Lang) -> anyhow::Result<ExternalAnchors> {
        Ok(ExternalAnchors {
            tfidf: Some(baseline::tfidf_both_directions(&self.train.0, &self.test.0)),
            ..Default::default()
        })
    }

    fn probe(&mut self) -> anyhow::Result<Option<Rc<ImageProbe>>> {
        Ok(Some(Rc::new(ImageProbe::fit(&self.test.1.embeddings, DIM, &self.images, 24)?)))
    }
}

/// Records what the experiment did; sets the interrupt flag at `stop_at` steps of run `stop_run`.
#[derive(Default)]
struct Log {
    started: Vec<(usize, usize)>,
    skipped: Vec<usize>,
    current: usize,
    stop: Option<(usize, usize)>,
    flag: Option<&'static AtomicBool>,
}

impl Observer for Log {
    fn start_run(&mut self, index: usize, _: usize, _: &RunSpec, from_step: usize, _: Option<f64>) {
        self.started.push((index, from_step));
        self.current = index;
    }
    fn progress(&mut self) -> &mut dyn Progress {
        self
    }
    fn end_run(&mut self) {}
    fn skipped(&mut self, index: usize, _: usize, _: &RunSpec) {
        self.skipped.push(index);
    }
    fn note(&mut self, _: &str) {}
}

impl Progress for Log {
    fn step(&mut self, step: usize, _: f64) {
        if let (Some((run, at)), Some(flag)) = (self.stop, self.flag)
            && run == self.current
            && step >= at
        {
            flag.store(true, Ordering::SeqCst);
        }
    }
    fn eval(&mut self, _: &EvalRecord) {}
}

#[test]
fn the_grid_runs_resumes_and_reports() {
    static FLAG: AtomicBool = AtomicBool::new(false);
    let request = PlanRequest {
        preset: ExperimentPreset::Quick,
        langs: Some(vec![Lang::AY]),
        methods: vec![Method::Ot, Method::Kd],
        starts: vec![Start::Random, Start::Ridge],
        seeds: Some(2),
        pairs: Some(vec![Some(60)]),
        budget_override: Some(Budget { steps: 12, eval_every: 4 }),
    };
    let specs = plan(&request);
    // Main: 2 starts x 2 seeds x 2 methods; sweep of 60 pairs: as many again.
    assert_eq!(specs.len(), 16);
    let out = otkd::testing::run_dir("experiment");
    let base = base();
    let mut materials = Synthetic::new();

    // First invocation: interrupted in the third run at step 6 (between two evaluations).
    let mut log = Log { stop: Some((2, 6)), flag: Some(&FLAG), ..Log::default() };
    let outcome = run_experiment(&out, "test", &specs, &base, &mut materials, &FLAG, &mut log).unwrap();
    let ExperimentOutcome::Interrupted { run, step } = outcome else { panic!("not interrupted") };
    assert_eq!((run.as_str(), step), (specs[2].id().as_str(), 6));
    assert_eq!(log.started, vec![(0, 0), (1, 0), (2, 0)]);
    assert!(!out.join("report.md").exists());

    // Second: the two finished runs are kept, the third resumes at its checkpoint, the rest run.
    FLAG.store(false, Ordering::SeqCst);
    let mut log = Log::default();
    let outcome = run_experiment(&out, "test", &specs, &base, &mut materials, &FLAG, &mut log).unwrap();
    let ExperimentOutcome::Reported(summary) = outcome else { panic!("interrupted") };
    assert_eq!(log.skipped, vec![0, 1]);
    assert_eq!(log.started[0], (2, 6));
    assert_eq!(log.started.len(), 14);
    assert_eq!(summary.runs, 16);
    // Cells: (main + sweep) x 2 starts x 2 methods; comparisons: one per (group, start).
    assert_eq!(summary.cells.len(), 8);
    assert_eq!(summary.comparisons.len(), 4);
    for c in &summary.comparisons {
        assert_eq!(c.tests.len(), 2, "last and best-dev");
        assert!(c.tests.iter().all(|t| t.p_holm >= t.bootstrap.p_value && t.bootstrap.queries == 40));
    }
    let anchors = summary.anchors_of(Lang::AY).unwrap();
    assert!(anchors.ridge_dev_r1 > anchors.untrained_dev_r1, "the ridge anchor beats the untrained student");
    assert!(anchors.ridge_probe.is_some() && anchors.external.tfidf.is_some());

    // Third: nothing is redone and nothing is prepared.
    let prepared_before = materials.prepared_count;
    let mut log = Log::default();
    run_experiment(&out, "test", &specs, &base, &mut materials, &FLAG, &mut log).unwrap();
    assert!(log.started.is_empty());
    assert_eq!(log.skipped.len(), 16);
    assert_eq!(materials.prepared_count, prepared_before, "finished runs and cached anchors need no data");

    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    for needle in
        ["OT − KD", "Holm", "teacher", "TF-IDF", "ridge student", "untrained", "probe", "Bitext size"]
    {
        assert!(report.contains(needle), "report lacks {needle:?}");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["runs"], 16);
    for stem in ["dev_r1_vs_step", "dev_r1_vs_seconds", "final_test_r1", "r1_vs_pairs"] {
        for ext in ["svg", "png"] {
            let path = out.join(format!("{stem}.{ext}"));
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            assert!(len > 1000, "{} has {len} bytes", path.display());
        }
        assert!(report.contains(&format!("{stem}.png")));
    }
    let png = std::fs::read(out.join("final_test_r1.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    std::fs::remove_dir_all(out).unwrap();
}
