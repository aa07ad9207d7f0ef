//! `otkd data check`.

use anyhow::{Result, bail};

use serde::Serialize;

use super::{Inputs, open_data, open_source, print_json};
use crate::cli::CheckArgs;
use crate::data::Source;
use crate::data::bitext_file::Dropped;

/// One language of a checked bitext.
#[derive(Serialize)]
struct BitextRow {
    lang: crate::data::Lang,
    train: usize,
    dev: usize,
    test: usize,
    dropped: Dropped,
}

/// Validates every Multi30k file, or the bitext files the flags name, and prints the table (or
/// JSON); an error if any defect was found.
pub fn check(inputs: &Inputs, args: &CheckArgs) -> Result<()> {
    let json = args.json;
    if args.source.is_bitext() {
        // Opening reads and checks every line; a defect is the error it returns.
        let Source::Bitext(files) = open_source(inputs, &args.source, args.lang)? else {
            unreachable!("bitext flags open a bitext")
        };
        let rows: Vec<BitextRow> = files
            .langs()
            .iter()
            .map(|l| {
                let [train, dev, test] = l.splits.each_ref().map(Vec::len);
                BitextRow { lang: l.lang, train, dev, test, dropped: l.dropped }
            })
            .collect();
        if json {
            return print_json(&rows);
        }
        outln!("lang       train    dev   test | dropped: empty side  duplicate  in dev/test");
        for r in &rows {
            let d = &r.dropped;
            outln!(
                "{:<8} {:>7} {:>6} {:>6} | {:>20} {:>10} {:>12}",
                r.lang.code(),
                r.train,
                r.dev,
                r.test,
                d.empty_side,
                d.duplicate,
                d.held_out
            );
        }
        return Ok(());
    }
    let data = open_data(inputs)?;
    let report = data.check();
    if json {
        print_json(&report)?;
    } else {
        out!("{}", report.render_table());
    }
    if !report.is_ok() {
        bail!("{} defect(s) in {}", report.defects.len(), data.root().display());
    }
    Ok(())
}
