//! `otkd eval`: test retrieval of a trained run on its own held-out test lines or on any other
//! test set, per language.

use anyhow::Result;
use serde::Serialize;

use super::{Inputs, cached_english, in_student_space, open_cache, open_teacher, print_json, run_source};
use crate::cli::EvalArgs;
use crate::data::{Lang, Split};
use crate::distill::data::EvalSet;
use crate::distill::run_dir::RunDir;
use crate::distill::trainer::test_both_scorings;
use crate::eval::metrics::BothDirections;

/// One language's test retrieval.
#[derive(Serialize)]
struct LangEvaluation {
    lang: Lang,
    pairs: usize,
    test: BothDirections,
    test_csls: BothDirections,
}

pub fn run(inputs: &Inputs, args: &EvalArgs) -> Result<()> {
    let run = RunDir::new(&args.run);
    let trained = run.load_student(args.checkpoint.into())?;
    let source = run_source(inputs, &run, &args.source)?;
    let langs: Vec<Lang> = args.langs.clone().unwrap_or_else(|| trained.config.lang.parts().collect());
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let batch = crate::cli::DEFAULT_TEACHER_BATCH as usize;
    let (_, train_en, _) = cached_english(&teacher, &cache, &source, Split::Train, batch, false)?;
    let (_, dev_en, _) = cached_english(&teacher, &cache, &source, Split::Dev, batch, false)?;
    let (_, test_en, _) = cached_english(&teacher, &cache, &source, Split::Test, batch, false)?;
    // The documents and references in the student's output space (a `nano` run's projection).
    let projection = trained.projection.as_ref();
    let [train_en, dev_en, test_en] = [train_en, dev_en, test_en].map(|o| in_student_space(projection, o));
    let tokenizer = &trained.student.config().tokenizer;
    let mut rows = Vec::new();
    for lang in langs {
        let test = source.bitext(Split::Test, lang)?;
        let (train, dev) = (source.bitext(Split::Train, lang)?, source.bitext(Split::Dev, lang)?);
        let set = EvalSet::new(tokenizer, &test, &test_en);
        let reference = EvalSet::csls_reference(tokenizer, (&train, &train_en), (&dev, &dev_en));
        let (test_metrics, test_csls) = test_both_scorings(&trained.student, &set, &reference)?;
        rows.push(LangEvaluation { lang, pairs: test.pairs.len(), test: test_metrics, test_csls });
    }
    if args.json {
        return print_json(&rows);
    }
    outln!(
        "{} ({} checkpoint, {}-en student) on {} {}",
        trained.path.display(),
        crate::distill::run_dir::CheckpointKind::from(args.checkpoint),
        trained.config.lang,
        source.describe(),
        source.split_name(Split::Test)
    );
    outln!("lang      pairs  scoring | X->en R@1   R@5  R@10   MRR | en->X R@1   R@5  R@10   MRR");
    for r in &rows {
        for (scoring, m) in [("cosine", &r.test), ("CSLS", &r.test_csls)] {
            outln!("{:<8} {:>6}  {:<7} | {}", r.lang.code(), r.pairs, scoring, m.cells(9));
        }
    }
    Ok(())
}
