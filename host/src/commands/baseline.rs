//! `otkd baseline`: the lower bounds every student is read against.

use anyhow::{Result, bail};

use super::{Inputs, cached_english, cached_texts, open_cache, open_source, open_teacher, print_json};
use crate::cli::{BaselineArgs, NgramsArg};
use crate::data::{Lang, Split};
use crate::eval::baseline::{self, LanguageBaselines};
use crate::student::ridge::choose_ngram_range;

/// Teacher zero-shot, char TF-IDF and (with `--ridge`) the ridge student on the test split.
pub fn run(inputs: &Inputs, args: &BaselineArgs) -> Result<()> {
    let single = args.langs.as_ref().filter(|l| l.len() == 1).map(|l| l[0]);
    let data = open_source(inputs, &args.source, single)?;
    let teacher = open_teacher(inputs)?;
    let cache = open_cache(inputs, &teacher)?;
    let batch = args.batch as usize;
    let (_, en_test, _) = cached_english(&teacher, &cache, &data, Split::Test, batch, false)?;
    let dim = en_test.dim;
    let ridge_inputs = if args.ridge {
        let (_, train_en, _) = cached_english(&teacher, &cache, &data, Split::Train, batch, false)?;
        let (_, val_en, _) = cached_english(&teacher, &cache, &data, Split::Dev, batch, false)?;
        Some((train_en, val_en))
    } else {
        None
    };
    let mut rows = Vec::new();
    let langs = args.langs.clone().unwrap_or_else(|| data.langs());
    for lang in langs {
        if lang.includes(Lang::EN) {
            bail!("--langs: en is the pivot language; pick another language to compare against it");
        }
        let test = data.bitext(Split::Test, lang)?;
        let train = data.bitext(Split::Train, lang)?;
        let x_texts: Vec<String> = test.x().into_iter().map(str::to_string).collect();
        let (x_out, _) =
            cached_texts(&teacher, &cache, &data.x_cache_name(Split::Test, lang), &x_texts, batch, false)?;
        let en_rows = en_test.embeddings_of(&test.lines());
        let teacher_zero_shot = baseline::teacher_zero_shot(&x_out.embeddings, &en_rows, dim);
        let tfidf = baseline::tfidf_both_directions(&train, &test);
        if !test.skipped.is_empty() && !args.json {
            eprintln!(
                "{lang}: skipped {} test pair(s) with an empty side (lines {:?}, 1-based)",
                test.skipped.len(),
                test.skipped.iter().map(|l| l + 1).collect::<Vec<_>>()
            );
        }
        let ridge = match &ridge_inputs {
            Some((train_en, val_en)) => {
                let val = data.bitext(Split::Dev, lang)?;
                let mut config = crate::student::ridge::RidgeConfig::default();
                let ngrams = match args.ngrams {
                    NgramsArg::Fixed(ngrams) => ngrams,
                    NgramsArg::Auto => {
                        let lambda = crate::distill::config::DEFAULT_RIDGE_LAMBDA as f32;
                        let choice = choose_ngram_range(lambda, &train, train_en, &val, val_en)?;
                        if !args.json {
                            eprintln!("{lang}: ridge n-gram range {choice}");
                        }
                        choice.chosen
                    }
                };
                config.tokenizer = ngrams.apply(config.tokenizer);
                let fit = crate::student::ridge::fit(&config, &train, train_en, &val, val_en, |_| {})?;
                let reference = crate::eval::CslsReference::new(&train, &val);
                let reference_x = reference.x();
                let reference_en = reference.en_embeddings(val_en, train_en);
                let x = fit.student.embed(&test.x());
                let test_csls = crate::eval::csls_both_directions(
                    &x,
                    &en_rows,
                    &fit.student.embed(&reference_x),
                    &reference_en,
                    dim,
                );
                Some(baseline::RidgeBaseline {
                    parameters: fit.student.parameters(),
                    lambda: fit.student.lambda,
                    test: crate::student::ridge::evaluate(&fit.student, &test, &en_test)?,
                    test_csls,
                })
            }
            None => None,
        };
        rows.push(LanguageBaselines {
            lang,
            pairs: test.pairs.len(),
            skipped: test.skipped.len(),
            teacher_zero_shot,
            tfidf,
            ridge,
        });
    }
    if args.json {
        print_json(&rows)
    } else {
        out!("{}", baseline::render_table(&rows));
        Ok(())
    }
}
