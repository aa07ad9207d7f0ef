//! The one progress style of every command: bars and spinners on stderr, drawn only on a terminal.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

const ITEMS_TEMPLATE: &str = "{msg:>14} [{bar:30}] {pos}/{len} {per_sec} eta {eta}";
const STEPS_TEMPLATE: &str = "[{bar:30}] {pos}/{len} {per_sec} eta {eta} {msg}";

/// A bar over `len` items, labelled `what`.
pub fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_message(what.to_string());
    bar.set_style(style(ITEMS_TEMPLATE));
    bar
}

/// A bar over steps `0..len` starting at `position`, whose message the caller updates (loss, R@1).
pub fn steps(len: usize, position: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64).with_position(position as u64);
    bar.set_style(style(STEPS_TEMPLATE));
    bar
}

/// A ticking spinner for a phase of unknown length.
pub fn spinner(message: String) -> ProgressBar {
    let spinner = ProgressBar::new_spinner().with_message(message);
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

fn style(template: &str) -> ProgressStyle {
    // The templates are literals of this module, checked by its test.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn templates_parse() {
        for t in [super::ITEMS_TEMPLATE, super::STEPS_TEMPLATE] {
            assert!(indicatif::ProgressStyle::with_template(t).is_ok(), "{t}");
        }
    }
}
