//! How `otkd` chose CSLS's `K` and reference size: val X -> en R@1 of the closed-form ridge
//! student (the default 4096-bucket fit, lambda chosen on val as in `otkd baseline --ridge`)
//! ranked by cosine and by CSLS for several `K` and several sizes of the reference population
//! (seeded samples of train captions; val itself is the evaluation, so it stays out of the
//! reference here).
//!
//! ```sh
//! cargo run --release -p otkd-host --example csls_choice -- ay,gn,qu,cs
//! ```

mod common;

use anyhow::Result;
use otkd::data::Split;
use otkd::eval::metrics::{both_directions, both_directions_csls, hubness};
use otkd::rng::SplitMix64;
use otkd::student::ridge::{RidgeConfig, fit};

const KS: [usize; 6] = [1, 3, 5, 10, 20, 50];
const REFERENCE_SIZES: [usize; 4] = [1000, 5000, 10000, 29000];

fn main() -> Result<()> {
    let langs = common::languages(std::env::args().nth(1))?;
    let (data, train_en, val_en) = common::multi30k_english()?;
    let dim = train_en.dim;

    println!("lang  reference     K  val X->en R@1  en->X R@1");
    for lang in langs {
        let (train, val) = (data.bitext(Split::Train, lang)?, data.bitext(Split::Dev, lang)?);
        let student = fit(&RidgeConfig::default(), &train, &train_en, &val, &val_en, |_| {})?.student;
        let x = student.embed(&val.x());
        let en = val_en.embeddings_of(&val.lines());
        let cosine = both_directions(&x, &en, dim);
        println!(
            "{lang:<4}  {:>9}  {:>4}  {:>13.4}  {:>9.4}",
            "-", "cos", cosine.x_to_en.r1, cosine.en_to_x.r1
        );
        let mut order: Vec<usize> = (0..train.pairs.len()).collect();
        SplitMix64::new(0, "csls-choice").shuffle(&mut order);
        for size in REFERENCE_SIZES {
            let sample: Vec<usize> = order.iter().take(size).copied().collect();
            let texts: Vec<&str> = sample.iter().map(|&i| train.pairs[i].x.as_str()).collect();
            let reference_x = student.embed(&texts);
            let reference_en =
                train_en.embeddings_of(&sample.iter().map(|&i| train.pairs[i].line).collect::<Vec<_>>());
            for k in KS {
                let r_en = hubness(&en, &reference_x, dim, k);
                let r_x = hubness(&x, &reference_en, dim, k);
                let m = both_directions_csls(&x, &en, dim, &r_en, &r_x);
                println!(
                    "{lang:<4}  {:>9}  {k:>4}  {:>13.4}  {:>9.4}",
                    sample.len(),
                    m.x_to_en.r1,
                    m.en_to_x.r1
                );
            }
        }
    }
    Ok(())
}
