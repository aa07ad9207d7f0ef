//! Training on a small synthetic bitext: both methods learn, a resumed run equals an
//! uninterrupted one bit for bit, and bad states stop with clear errors.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use otkd::data::Split;
use otkd::distill::config::{Start, TrainConfig, TrainError};
use otkd::distill::data::TrainData;
use otkd::distill::losses::{KdVariant, LossConfig, Method};
use otkd::distill::optim::AdamWConfig;
use otkd::distill::run_dir::{CheckpointKind, EvalRecord, RunDir, files};
use otkd::distill::trainer::{Outcome, Progress, StepPath, Trainer};
use otkd::testing::{config, data, run_dir, synthetic};

/// Stops the run (through the interrupt flag) once it reaches `stop_at`.
struct StopAt<'a> {
    stop_at: usize,
    flag: &'a AtomicBool,
}

impl Progress for StopAt<'_> {
    fn step(&mut self, step: usize, _loss: f64) {
        if step >= self.stop_at {
            self.flag.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    fn eval(&mut self, _: &EvalRecord) {}
}

fn train(config: &TrainConfig, data: &TrainData, out: &Path, resume: bool, stop_at: usize) -> Outcome {
    let flag = AtomicBool::new(false);
    let (mut trainer, start) = Trainer::open(config.clone(), data, out, resume).unwrap();
    trainer.run(start, &flag, &mut StopAt { stop_at, flag: &flag }).unwrap()
}

fn read_metrics(dir: &Path) -> anyhow::Result<Vec<EvalRecord>> {
    RunDir::new(dir).metrics()
}

fn weights(path: &Path) -> Vec<(String, Vec<f32>)> {
    let ckpt: otkd::distill::checkpoint::Checkpoint<serde_json::Value> =
        otkd::distill::checkpoint::load(path).unwrap();
    let mut out: Vec<(String, Vec<f32>)> =
        ckpt.tensors.iter().map(|(n, t)| (n.clone(), t.flatten_all().unwrap().to_vec1().unwrap())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn without_time(records: Vec<EvalRecord>) -> Vec<EvalRecord> {
    records.into_iter().map(|r| EvalRecord { elapsed_seconds: 0.0, ..r }).collect()
}

#[test]
fn both_methods_learn_the_synthetic_language() {
    for method in [Method::Kd, Method::Ot] {
        let config = config(method, 60);
        let data = data(&config);
        let out = run_dir(&format!("learn-{method:?}"));
        let Outcome::Finished(report) = train(&config, &data, &out, false, usize::MAX) else {
            panic!("interrupted")
        };
        let metrics = read_metrics(&out).unwrap();
        let (before, after) = (metrics[0].dev_r1, metrics.last().unwrap().dev_r1);
        assert!(after > before + 0.2, "{method:?}: dev R@1 {before} -> {after}");
        assert_eq!(metrics.len(), 7, "evaluations at steps 0, 10, ..., 60");
        if method == Method::Ot {
            let last = metrics.last().unwrap();
            assert!(last.ot.is_some() && last.sinkhorn_iterations.unwrap() >= 1.0);
        }
        assert!([&report.last, &report.best].iter().all(|c| c.test.x_to_en.queries == 60));
        let best = &report.best;
        assert!(best.dev_r1 >= metrics.iter().map(|r| r.dev_r1).fold(0.0, f64::max) - 1e-12);
        assert!(out.join(files::FINAL).exists() && out.join(files::BEST).exists());
        std::fs::remove_dir_all(out).unwrap();
    }
}

#[test]
fn ridge_initialisation_starts_at_the_closed_form_fit() {
    // The synthetic teacher's embedding is the normalised mean of word vectors, a linear function
    // of the X side's word counts: the ridge-initialised student retrieves well before any step.
    let dev_r1_at_step_0 = |start| {
        let config = TrainConfig { start, ..config(Method::Kd, 10) };
        let data = data(&config);
        let out = run_dir(&format!("init-{start:?}"));
        train(&config, &data, &out, false, usize::MAX);
        let r1 = read_metrics(&out).unwrap()[0].dev_r1;
        std::fs::remove_dir_all(out).unwrap();
        r1
    };
    let (random, ridge) = (dev_r1_at_step_0(Start::Random), dev_r1_at_step_0(Start::Ridge));
    assert!(random < 0.3 && ridge > 0.8, "dev R@1 at step 0: random {random}, ridge {ridge}");
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let config = config(Method::Ot, 30);
    let data = data(&config);
    let straight = run_dir("straight");
    assert!(matches!(train(&config, &data, &straight, false, usize::MAX), Outcome::Finished(_)));

    let resumed = run_dir("resumed");
    // Interrupted between two evaluations: the checkpoint holds a mid-interval state.
    let Outcome::Interrupted { step } = train(&config, &data, &resumed, false, 13) else {
        panic!("not interrupted")
    };
    assert_eq!(step, 13);
    assert!(matches!(train(&config, &data, &resumed, true, usize::MAX), Outcome::Finished(_)));

    assert_eq!(weights(&straight.join(files::LAST)), weights(&resumed.join(files::LAST)));
    assert_eq!(without_time(read_metrics(&straight).unwrap()), without_time(read_metrics(&resumed).unwrap()));
    std::fs::remove_dir_all(straight).unwrap();
    std::fs::remove_dir_all(resumed).unwrap();
}

#[test]
fn bad_states_give_clear_errors() {
    let config = config(Method::Kd, 20);
    let data = data(&config);
    let out = run_dir("bad");
    train(&config, &data, &out, false, 10);

    // A run directory is never silently overwritten.
    let err = Trainer::open(config.clone(), &data, &out, false).err().unwrap();
    assert!(matches!(err.downcast_ref(), Some(TrainError::RunExists { .. })), "{err}");
    // Resuming with other flags is refused, naming the checkpoint.
    let other = TrainConfig { seed: 4, ..config.clone() };
    let err = Trainer::open(other, &data, &out, true).err().unwrap().to_string();
    assert!(err.contains(files::LAST) && err.contains("configuration"), "{err}");
    // An output path that is a file is named before any work.
    let file = out.join(files::CONFIG);
    let err = Trainer::open(config.clone(), &data, &file, false).err().unwrap();
    assert!(matches!(err.downcast_ref(), Some(TrainError::OutIsNotADirectory { .. })), "{err}");
    // A corrupt checkpoint is named, not a panic.
    let last = out.join(files::LAST);
    let bytes = std::fs::read(&last).unwrap();
    std::fs::write(&last, &bytes[..bytes.len() - 100]).unwrap();
    let err = Trainer::open(config.clone(), &data, &out, true).err().unwrap().to_string();
    assert!(err.contains(last.to_str().unwrap()) && err.contains("corrupt"), "{err}");
    std::fs::remove_dir_all(&out).unwrap();

    // A diverging run stops naming the step its last checkpoint really holds, and that
    // checkpoint stays loadable; before the first checkpoint it says that none was saved.
    for eval_every in [1, 1000] {
        let diverging = TrainConfig {
            optimizer: AdamWConfig { lr: 1e30, warmup_steps: 1, clip_norm: 1e30, ..config.optimizer },
            eval_every,
            ..config.clone()
        };
        let flag = AtomicBool::new(false);
        let (mut trainer, start) = Trainer::open(diverging, &data, &out, false).unwrap();
        let err = trainer
            .run(start, &flag, &mut StopAt { stop_at: usize::MAX, flag: &flag })
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("at step") && (err.contains("NaN") || err.contains("inf")), "{err}");
        let last = out.join(files::LAST);
        if eval_every == 1 {
            let saved: usize = err.rsplit("still holds step ").next().unwrap().trim().parse().unwrap();
            assert_eq!(RunDir::new(&out).last_step(), Some(saved), "{err}");
        } else {
            assert!(err.contains("no checkpoint was saved yet") && !last.exists(), "{err}");
        }
        std::fs::remove_dir_all(&out).unwrap();
    }
}

#[test]
fn resume_survives_a_torn_metrics_line() {
    let config = config(Method::Kd, 20);
    let data = data(&config);
    let straight = run_dir("torn-straight");
    train(&config, &data, &straight, false, usize::MAX);
    let torn = run_dir("torn");
    train(&config, &data, &torn, false, 13);
    // Killed while appending an evaluation: half a JSON line, no newline.
    let metrics = torn.join(files::METRICS);
    let mut text = std::fs::read_to_string(&metrics).unwrap();
    text.push_str("{\"step\":20,\"elapsed_sec");
    std::fs::write(&metrics, text).unwrap();
    let err = read_metrics(&torn).unwrap_err();
    assert!(format!("{err:#}").contains("line 3"), "{err:#}");
    assert!(matches!(train(&config, &data, &torn, true, usize::MAX), Outcome::Finished(_)));
    assert_eq!(without_time(read_metrics(&straight).unwrap()), without_time(read_metrics(&torn).unwrap()));
    std::fs::remove_dir_all(straight).unwrap();
    std::fs::remove_dir_all(torn).unwrap();
}

#[test]
fn every_loss_variant_trains() {
    let base = config(Method::Kd, 20);
    let variants = [
        (Method::Kd, KdVariant::Kl, 1.0, false),
        (Method::Kd, KdVariant::Infonce, 1.0, false),
        (Method::Kd, KdVariant::Mse, 0.0, false),
        (Method::Ot, KdVariant::Infonce, 0.0, false),
        (Method::Ot, KdVariant::Mse, 1.0, true),
    ];
    for (method, kd_variant, english_weight, ot_unrolled) in variants {
        let config = TrainConfig {
            method,
            loss: LossConfig {
                method,
                kd_variant,
                english_weight,
                ot_unrolled,
                sinkhorn_iterations: if ot_unrolled { 10 } else { 100 },
                ..base.loss
            },
            ..base.clone()
        };
        let data = data(&config);
        let name = format!("{method:?}-{kd_variant:?}-{english_weight}-{ot_unrolled}");
        let out = run_dir(&name);
        let Outcome::Finished(report) = train(&config, &data, &out, false, usize::MAX) else {
            panic!("{name}: interrupted")
        };
        let metrics = read_metrics(&out).unwrap();
        assert!(metrics.iter().skip(1).all(|r| r.loss.is_some_and(f64::is_finite)), "{name}");
        let (before, after) = (metrics[0].dev_r1, metrics.last().unwrap().dev_r1);
        assert!(after > before, "{name}: dev R@1 {before} -> {after}");
        assert!(report.last.test.x_to_en.r1 > 0.0, "{name}");
        std::fs::remove_dir_all(out).unwrap();
    }
}

#[test]
fn empty_bitext_is_an_error_not_a_division_by_zero() {
    let config = config(Method::Kd, 5);
    let (mut train, teacher) = synthetic(20, 1, Split::Train);
    train.skipped = train.pairs.iter().map(|p| p.line).collect();
    train.pairs.clear();
    let (dev, dev_teacher) = synthetic(10, 2, Split::Dev);
    let err = TrainData::prepare(&config, &train, teacher, (&dev, &dev_teacher), (&dev, &dev_teacher))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no training pairs") && err.contains("20 skipped"), "{err}");
}

/// The graph path (what a GPU runs) against the fused CPU path, on the CPU: the same steps give
/// the same losses and dev results, up to the float rounding of two ways of computing them.
#[test]
fn graph_step_path_trains_like_the_fused_path() {
    for method in [Method::Kd, Method::Ot] {
        let config = config(method, 20);
        let data = data(&config);
        let mut curves = Vec::new();
        for path in [StepPath::Fused, StepPath::Graph] {
            let out = run_dir(&format!("path-{method:?}-{path:?}"));
            let (trainer, start) = Trainer::open(config.clone(), &data, &out, false).unwrap();
            let mut trainer =
                trainer.on_device(&candle_core::Device::Cpu).unwrap().with_step_path(path).unwrap();
            let flag = AtomicBool::new(false);
            let outcome =
                trainer.run(start, &flag, &mut StopAt { stop_at: usize::MAX, flag: &flag }).unwrap();
            assert!(matches!(outcome, Outcome::Finished(_)));
            curves.push(read_metrics(&out).unwrap());
            std::fs::remove_dir_all(out).unwrap();
        }
        let (fused, graph) = (&curves[0], &curves[1]);
        assert_eq!(fused.len(), graph.len());
        for (a, b) in fused.iter().zip(graph).skip(1) {
            let (la, lb) = (a.loss.unwrap(), b.loss.unwrap());
            assert!(
                (la - lb).abs() <= 1e-5 * la.abs().max(1.0),
                "{method:?} step {}: loss {la} vs {lb}",
                a.step
            );
            assert!(
                (a.dev_r1 - b.dev_r1).abs() <= 0.02,
                "{method:?} step {}: dev R@1 {} vs {}",
                a.step,
                a.dev_r1,
                b.dev_r1
            );
        }
    }
}

/// A run that only gets worse (too high a learning rate from the ridge start) keeps its step-0
/// student as the best-dev checkpoint: step 0 is a candidate.
#[test]
fn best_dev_checkpoint_can_be_step_0() {
    let base = config(Method::Kd, 30);
    let config = TrainConfig {
        start: Start::Ridge,
        optimizer: AdamWConfig { lr: 1.0, warmup_steps: 1, ..base.optimizer },
        ..base
    };
    let data = data(&config);
    let out = run_dir("best-step-0");
    let Outcome::Finished(report) = train(&config, &data, &out, false, usize::MAX) else {
        panic!("interrupted")
    };
    let metrics = read_metrics(&out).unwrap();
    let step_0 = metrics[0].dev_r1;
    assert!(
        metrics.iter().skip(1).all(|r| r.dev_r1 < step_0),
        "the setting must make every later evaluation worse: {metrics:?}"
    );
    assert_eq!((report.best.step, report.best.dev_r1), (0, step_0));
    // The exported student is the step-0 one.
    let best = RunDir::new(&out).load_student(CheckpointKind::BestDev).unwrap();
    let dev = otkd::distill::trainer::evaluate(&best.student, &data.dev).unwrap();
    assert_eq!(dev.x_to_en.r1, step_0);
    std::fs::remove_dir_all(out).unwrap();
}

/// A resume rewrites `metrics.jsonl` from the checkpoint's history: a record lost from the file
/// comes back instead of leaving a permanent gap.
#[test]
fn resume_restores_lost_metrics_records() {
    let config = config(Method::Kd, 30);
    let data = data(&config);
    let straight = run_dir("gap-straight");
    train(&config, &data, &straight, false, usize::MAX);
    let gap = run_dir("gap");
    train(&config, &data, &gap, false, 13);
    let metrics = gap.join(files::METRICS);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("{\"step\":10,")).collect();
    assert_eq!(kept.len(), 1, "step 10's record removed: {text}");
    std::fs::write(&metrics, kept.join("\n") + "\n").unwrap();
    assert!(matches!(train(&config, &data, &gap, true, usize::MAX), Outcome::Finished(_)));
    assert_eq!(without_time(read_metrics(&straight).unwrap()), without_time(read_metrics(&gap).unwrap()));
    std::fs::remove_dir_all(straight).unwrap();
    std::fs::remove_dir_all(gap).unwrap();
}

/// The checkpoints are checked against the files beside them: a flipped byte, an edited
/// `config.json` or `train_lines.json` is refused by name before a student is loaded.
#[test]
fn edited_run_files_are_refused_by_name() {
    let config = config(Method::Kd, 10);
    let data = data(&config);
    let out = run_dir("edited");
    train(&config, &data, &out, false, usize::MAX);
    let dir = RunDir::new(&out);
    assert!(dir.load_student(CheckpointKind::BestDev).is_ok());

    let config_path = out.join(files::CONFIG);
    let original = std::fs::read_to_string(&config_path).unwrap();
    std::fs::write(&config_path, original.replace("\"ay\"", "\"qu\"")).unwrap();
    let err = format!("{:#}", dir.load_student(CheckpointKind::BestDev).err().unwrap());
    assert!(err.contains(files::CONFIG) && err.contains("changed after training"), "{err}");
    std::fs::write(&config_path, &original).unwrap();

    let lines_path = out.join(files::TRAIN_LINES);
    let lines = std::fs::read_to_string(&lines_path).unwrap();
    std::fs::write(&lines_path, lines.replacen('1', "2", 1)).unwrap();
    let err = format!("{:#}", dir.load_student(CheckpointKind::Last).err().unwrap());
    assert!(err.contains(files::TRAIN_LINES) && err.contains("changed after training"), "{err}");
    std::fs::write(&lines_path, &lines).unwrap();

    let best = out.join(files::BEST);
    let mut bytes = std::fs::read(&best).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&best, &bytes).unwrap();
    let err = format!("{:#}", dir.load_student(CheckpointKind::BestDev).err().unwrap());
    assert!(err.contains(best.to_str().unwrap()) && err.contains("checksum mismatch"), "{err}");
    std::fs::remove_dir_all(out).unwrap();
}

/// Fewer pairs than a batch would train a degenerate in-batch loss: a named error instead.
#[test]
fn fewer_pairs_than_a_batch_is_a_named_error() {
    let config = TrainConfig { pairs: Some(1), ..config(Method::Kd, 5) };
    let (train, teacher) = synthetic(20, 1, Split::Train);
    let (dev, dev_teacher) = synthetic(10, 2, Split::Dev);
    let err = TrainData::prepare(&config, &train, teacher, (&dev, &dev_teacher), (&dev, &dev_teacher))
        .err()
        .unwrap();
    assert!(
        matches!(err.downcast_ref(), Some(TrainError::FewerPairsThanBatch { pairs: 1, batch: 16 })),
        "{err}"
    );
}

/// A student narrower than the teacher (as `--preset nano` is: 128 of 384) is distilled into a PCA
/// projection of the teacher's space: both methods learn through it (OT on projected token
/// states), the run directory keeps the projection beside a checksum in every checkpoint, the
/// trained student's documents live in the projected space, a resume continues bit for bit, and
/// a replaced projection is refused by name.
#[test]
fn a_narrower_student_learns_through_a_projection_of_the_teacher() {
    use otkd::teacher::projection::Projection;
    let narrow = |method, steps| {
        let mut config = config(method, steps);
        config.student.out_dim = otkd::testing::DIM / 2;
        config
    };
    for method in [Method::Kd, Method::Ot] {
        let config = narrow(method, 60);
        let data = data(&config);
        let projection = data.projection.as_ref().expect("an out_dim under the teacher's projects");
        assert_eq!((projection.teacher_dim, projection.dim), (otkd::testing::DIM, otkd::testing::DIM / 2));
        assert_eq!((data.targets.dim, data.dev.en.len()), (8, 60 * 8));
        assert_eq!(data.teacher.dim, otkd::testing::DIM, "the OT term reads the teacher's own states");
        let out = run_dir(&format!("narrow-{method:?}"));
        let Outcome::Finished(report) = train(&config, &data, &out, false, usize::MAX) else {
            panic!("interrupted")
        };
        let metrics = read_metrics(&out).unwrap();
        let (before, after) = (metrics[0].dev_r1, metrics.last().unwrap().dev_r1);
        assert!(after > before + 0.2, "{method:?}: dev R@1 {before} -> {after}");
        assert!(report.last.test.x_to_en.r1 > 0.5, "{method:?}: {:?}", report.last.test.x_to_en);
        let trained = RunDir::new(&out).load_student(CheckpointKind::Last).unwrap();
        assert_eq!(trained.projection.as_ref(), Some(projection));
        std::fs::remove_dir_all(out).unwrap();
    }

    // Resume: bit for bit, as without a projection.
    let config = narrow(Method::Ot, 30);
    let data = data(&config);
    let (straight, resumed) = (run_dir("narrow-straight"), run_dir("narrow-resumed"));
    assert!(matches!(train(&config, &data, &straight, false, usize::MAX), Outcome::Finished(_)));
    assert!(matches!(train(&config, &data, &resumed, false, 13), Outcome::Interrupted { step: 13 }));
    assert!(matches!(train(&config, &data, &resumed, true, usize::MAX), Outcome::Finished(_)));
    assert_eq!(weights(&straight.join(files::LAST)), weights(&resumed.join(files::LAST)));

    // Another projection in the run directory is refused by name.
    let path = straight.join(files::PROJECTION);
    let other =
        Projection::fit(&data.teacher.embeddings[..100 * otkd::testing::DIM], otkd::testing::DIM, 8).unwrap();
    other.save(&path).unwrap();
    let err = format!("{:#}", RunDir::new(&straight).load_student(CheckpointKind::BestDev).err().unwrap());
    assert!(err.contains(files::PROJECTION) && err.contains("changed after training"), "{err}");
    std::fs::remove_dir_all(straight).unwrap();
    std::fs::remove_dir_all(resumed).unwrap();

    // The teacher's own width: no projection, the targets are the teacher's outputs.
    let data = otkd::testing::data(&otkd::testing::config(Method::Kd, 10));
    assert!(data.projection.is_none() && std::sync::Arc::ptr_eq(&data.targets, &data.teacher));
}
