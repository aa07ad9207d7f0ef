//! `otkd data check`.

use anyhow::{Result, bail};

use super::{Inputs, open_data, print_json};

/// Validates every Multi30k file and prints the table (or JSON); an error if any defect was found.
pub fn check(inputs: &Inputs, json: bool) -> Result<()> {
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
