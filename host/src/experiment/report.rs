//! `report.md`: the answer first, in numbers computed from the summary (no sentence of it is
//! fixed in advance), then the tables and the plots.

use std::fmt::Write as _;

use super::plan::{Group, Start};
use super::stats::MeanSd;
use super::summary::{Cell, Comparison, Summary};
use crate::distill::losses::Method;
use crate::eval::metrics::BothDirections;

/// "OT" or "KD".
pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Ot => "OT",
        Method::Kd => "KD",
    }
}

fn pairs_label(pairs: Option<usize>) -> String {
    pairs.map_or("all".into(), |n| n.to_string())
}

fn ci(m: &MeanSd) -> String {
    match m.ci95 {
        Some((lo, hi)) => format!("[{lo:.3}, {hi:.3}]"),
        None => "(one seed: no CI)".into(),
    }
}

fn secs(m: &MeanSd) -> String {
    if m.n == 0 {
        return "-".into();
    }
    if m.n == 1 { format!("{:.0} s", m.mean) } else { format!("{:.0} ± {:.0} s", m.mean, m.sd) }
}

fn steps(m: &MeanSd) -> String {
    if m.n == 0 {
        return "-".into();
    }
    if m.n == 1 { format!("{:.0}", m.mean) } else { format!("{:.0} ± {:.0}", m.mean, m.sd) }
}

/// A comparison of two means as words: which is lower (faster) and by how much, and whether the
/// gap exceeds the larger of the two seed standard deviations.
fn faster(what: &str, ot: &MeanSd, kd: &MeanSd, unit: &str) -> String {
    if ot.n == 0 || kd.n == 0 {
        return format!("{what}: not measured");
    }
    let gap = kd.mean - ot.mean;
    let spread = ot.sd.max(kd.sd);
    let who = if gap > 0.0 {
        "OT"
    } else if gap < 0.0 {
        "KD"
    } else {
        return format!("{what}: OT and KD are equal ({:.0} {unit})", ot.mean);
    };
    let slower = ot.mean.max(kd.mean);
    let pct = if slower > 0.0 { 100.0 * gap.abs() / slower } else { 0.0 };
    let spread_words = if ot.n < 2 || kd.n < 2 {
        "one seed, so the seed-to-seed spread is unknown".to_string()
    } else if gap.abs() > spread {
        format!("larger than the seed-to-seed sd ({spread:.0} {unit})")
    } else {
        format!("within the seed-to-seed sd ({spread:.0} {unit})")
    };
    format!("{what}: {who} is faster by {:.0} {unit} ({pct:.0}%), {spread_words}", gap.abs())
}

fn headline(out: &mut String, s: &Summary, c: &Comparison) {
    let cell = |m| s.cell(c.group, c.lang, c.start, c.pairs, m);
    let (Some(ot), Some(kd)) = (cell(Method::Ot), cell(Method::Kd)) else { return };
    let _ = write!(
        out,
        "- **{} ({}), {} start**, {} seed(s), {} steps: ",
        c.lang.name(),
        c.lang,
        c.start,
        c.seeds.len(),
        ot.steps
    );
    for t in &c.tests {
        let b = &t.bootstrap;
        let verdict = if b.ci95.0 > 0.0 {
            "OT higher"
        } else if b.ci95.1 < 0.0 {
            "KD higher"
        } else {
            "no difference detected"
        };
        let spread = if c.seeds.len() < 2 {
            String::new()
        } else if b.difference.abs() > t.seed_sd {
            format!(", larger than the seed sd {:.3}", t.seed_sd)
        } else {
            format!(", within the seed sd {:.3}", t.seed_sd)
        };
        let _ = write!(
            out,
            "test X→en R@1 at the {} checkpoint OT {} {} vs KD {} {}; OT − KD {:+.3} (paired bootstrap 95% CI [{:+.3}, {:+.3}], p = {:.3}, Holm p = {:.3}: {verdict}{spread}). ",
            t.checkpoint,
            t.ot.show(3),
            ci(&t.ot),
            t.kd.show(3),
            ci(&t.kd),
            b.difference,
            b.ci95.0,
            b.ci95.1,
            b.p_value,
            t.p_holm
        );
    }
    let (o, k) = (&ot.convergence, &kd.convergence);
    let _ = write!(
        out,
        "Steps (seconds) to 90% / 95% of own final dev R@1: OT {} ({}) / {} ({}), KD {} ({}) / {} ({}). {}; {}. ",
        steps(&o.steps_to_90),
        secs(&o.seconds_to_90),
        steps(&o.steps_to_95),
        secs(&o.seconds_to_95),
        steps(&k.steps_to_90),
        secs(&k.seconds_to_90),
        steps(&k.steps_to_95),
        secs(&k.seconds_to_95),
        faster("To 95% in steps", &o.steps_to_95, &k.steps_to_95, "steps"),
        faster("in seconds", &o.seconds_to_95, &k.seconds_to_95, "s"),
    );
    let r = &c.ot_reaches_kd_final;
    let _ = writeln!(
        out,
        "OT reaches KD's final dev R@1 in {} of {} seed(s){}.",
        r.seeds - r.never,
        r.seeds,
        if r.steps.n > 0 {
            format!(" (after {} steps, {})", steps(&r.steps), secs(&r.seconds))
        } else {
            String::new()
        }
    );
}

fn metric_row(name: &str, dev: Option<&MeanSd>, t: &BothDirections) -> String {
    let (a, b) = (&t.x_to_en, &t.en_to_x);
    format!(
        "| {name} | {} | {:.3} | - | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |\n",
        dev.map_or("-".into(), |d| d.show(3)),
        a.r1,
        a.r5,
        a.r10,
        a.mrr,
        b.r1,
        b.r5,
        b.r10,
        b.mrr
    )
}

fn cell_rows(out: &mut String, c: &Cell) {
    for (label, k) in [("last", &c.last), ("best-dev", &c.best_dev)] {
        let (a, b) = (&k.x_to_en, &k.en_to_x);
        let _ = writeln!(
            out,
            "| {} {} start, {label} (step {}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            method_name(c.method),
            c.start,
            steps(&k.step),
            k.dev_r1.show(3),
            a.r1.show(3),
            k.x_to_en_csls_r1.show(3),
            a.r5.show(3),
            a.r10.show(3),
            a.mrr.show(3),
            b.r1.show(3),
            b.r5.show(3),
            b.r10.show(3),
            b.mrr.show(3)
        );
    }
}

const ACCURACY_HEADER: &str = "| student | dev R@1 | X→en R@1 | X→en R@1 CSLS | R@5 | R@10 | MRR | en→X R@1 | R@5 | R@10 | MRR |\n|---|---|---|---|---|---|---|---|---|---|---|\n";

fn anchor_rows(out: &mut String, s: &Summary, lang: crate::data::Lang) {
    let Some(a) = s.anchors_of(lang) else { return };
    if let Some(t) = &a.external.teacher_zero_shot {
        out.push_str(&metric_row("anchor: teacher zero-shot on X", None, t));
    }
    if let Some(t) = &a.external.tfidf {
        out.push_str(&metric_row("anchor: char n-gram TF-IDF", None, t));
    }
    let one = |v: f64| MeanSd::of(&[v]);
    out.push_str(&metric_row(
        "anchor: closed-form ridge student, same size",
        Some(&one(a.ridge_dev_r1)),
        &a.ridge_test,
    ));
    out.push_str(&metric_row(
        "anchor: untrained student (random, step 0)",
        Some(&one(a.untrained_dev_r1)),
        &a.untrained_test,
    ));
}

/// Renders `report.md`, one section after the other. `plots` are the file stems written beside it.
pub fn render(s: &Summary, plots: &[(&str, &str)], wall_seconds: Option<f64>) -> String {
    let mut out = String::new();
    answer_section(&mut out, s, wall_seconds);
    accuracy_sections(&mut out, s);
    convergence_section(&mut out, s);
    bootstrap_section(&mut out, s);
    bitext_size_section(&mut out, s);
    probe_section(&mut out, s);
    plots_section(&mut out, plots);
    out
}

/// The question and its answer per language and start, and the settings every run shared.
fn answer_section(out: &mut String, s: &Summary, wall_seconds: Option<f64>) {
    let _ = writeln!(out, "# otkd experiment: OT vs KD distillation (preset {})\n", s.preset);
    out.push_str(
        "Question: does OT distillation make a student for a low-resource language converge faster, and end more accurate, \
than teacher-student KD? Answer, per language and start (means ± sd over seeds; 95% CI of the mean over seeds in brackets):\n\n",
    );
    for c in s.comparisons.iter().filter(|c| c.group == Group::Main) {
        headline(out, s, c);
    }
    let _ = writeln!(
        out,
        "\n{} runs, {:.0} s of training{}. Settings shared by every run: micro student, batch {}, lr {}, KD variant {:?}, English weight {}, OT ε {} and λ {} (see summary.json `base`). \
Curves are dev X→en R@1 (Multi30k: the 1,014 val pairs; a bitext: its dev set) every `eval_every` steps; \"final\" is the last evaluation, convergence points are the first evaluation at or above the fraction. \
The OT − KD test is a paired bootstrap over test queries ({} resamples, seed {}) of per-query R@1 hits averaged over the seeds the two methods share; \
p is two-sided. Several tests are read together here, so each also carries a Holm-adjusted p over all {} tests of this report: read the Holm column before calling any single difference real.\n",
        s.runs,
        s.train_seconds,
        wall_seconds.map_or(String::new(), |w| format!(", {:.0} s wall-clock for this invocation", w)),
        s.base.batch,
        s.base.optimizer.lr,
        s.base.loss.kd_variant,
        s.base.loss.english_weight,
        s.base.loss.epsilon,
        s.base.loss.ot_kd_weight,
        s.bootstrap.0,
        s.bootstrap.1,
        s.comparisons.iter().map(|c| c.tests.len()).sum::<usize>()
    );
}

/// Final accuracy tables: the main grid and the higher-resource languages, anchors first.
fn accuracy_sections(out: &mut String, s: &Summary) {
    for (group, title) in
        [(Group::Main, "Final accuracy (all pairs)"), (Group::HighResource, "Higher-resource languages")]
    {
        let langs: Vec<_> = {
            let mut l: Vec<_> = s.cells.iter().filter(|c| c.group == group).map(|c| c.lang).collect();
            l.dedup();
            l
        };
        if langs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "## {title}\n");
        for lang in langs {
            let _ = writeln!(out, "### {} ({lang})\n", lang.name());
            out.push_str(ACCURACY_HEADER);
            anchor_rows(out, s, lang);
            for c in s.cells.iter().filter(|c| c.group == group && c.lang == lang) {
                cell_rows(out, c);
            }
            out.push('\n');
        }
    }
}

/// Steps and seconds to 90% / 95% of each run's final dev R@1, and OT reaching KD's final.
fn convergence_section(out: &mut String, s: &Summary) {
    out.push_str("## Convergence\n\nSteps and training seconds (evaluation excluded) to 90% / 95% of the run's own final dev R@1; AUC = area under the dev R@1 curve divided by its steps (the mean dev R@1 over training); mean ± sd over seeds.\n\n");
    out.push_str("| language | pairs | start | method | dev R@1 step 0 | final dev R@1 | steps to 90% | s to 90% | steps to 95% | s to 95% | AUC | train s |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for c in &s.cells {
        let v = &c.convergence;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.lang,
            pairs_label(c.pairs),
            c.start,
            method_name(c.method),
            v.start_dev_r1.show(3),
            v.final_dev_r1.show(3),
            steps(&v.steps_to_90),
            secs(&v.seconds_to_90),
            steps(&v.steps_to_95),
            secs(&v.seconds_to_95),
            v.auc.show(3),
            secs(&v.train_seconds)
        );
    }
    out.push_str("\nSteps for OT to first reach KD's final dev R@1 (same seed):\n\n| language | pairs | start | steps | seconds | never |\n|---|---|---|---|---|---|\n");
    for c in &s.comparisons {
        let r = &c.ot_reaches_kd_final;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} of {} |",
            c.lang,
            pairs_label(c.pairs),
            c.start,
            steps(&r.steps),
            secs(&r.seconds),
            r.never,
            r.seeds
        );
    }
}

/// The paired bootstrap of OT − KD with Holm-adjusted p.
fn bootstrap_section(out: &mut String, s: &Summary) {
    out.push_str("\n## OT − KD paired bootstrap (test X→en R@1)\n\n| language | pairs | start | checkpoint | OT | KD | OT − KD | 95% CI | p | Holm p |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for c in &s.comparisons {
        for t in &c.tests {
            let b = &t.bootstrap;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:+.3} | [{:+.3}, {:+.3}] | {:.4} | {:.4} |",
                c.lang,
                pairs_label(c.pairs),
                c.start,
                t.checkpoint,
                t.ot.show(3),
                t.kd.show(3),
                b.difference,
                b.ci95.0,
                b.ci95.1,
                b.p_value,
                t.p_holm
            );
        }
    }
}

/// Test R@1 against training pairs (only when the grid has a sweep).
fn bitext_size_section(out: &mut String, s: &Summary) {
    if !s.cells.iter().any(|c| c.group == Group::Sweep) {
        return;
    }
    out.push_str("\n## Bitext size\n\nTest X→en R@1 (mean ± sd over seeds) against training pairs; `all` is the main grid.\n\n| language | start | pairs | OT last | KD last | OT best-dev | KD best-dev |\n|---|---|---|---|---|---|---|\n");
    let mut keys: Vec<_> = s
        .cells
        .iter()
        .filter(|c| {
            c.group == Group::Sweep
                || (c.group == Group::Main
                    && s.cells.iter().any(|d| d.group == Group::Sweep && d.lang == c.lang))
        })
        .map(|c| (c.lang, c.start, c.pairs.unwrap_or(usize::MAX)))
        .collect();
    keys.sort();
    keys.dedup();
    for (lang, start, pairs) in keys {
        let p = (pairs != usize::MAX).then_some(pairs);
        let g = if p.is_some() { Group::Sweep } else { Group::Main };
        let get = |m: Method, best: bool| {
            s.cell(g, lang, start, p, m).map_or("-".into(), |c| {
                if best { c.best_dev.x_to_en.r1.show(3) } else { c.last.x_to_en.r1.show(3) }
            })
        };
        let _ = writeln!(
            out,
            "| {lang} | {start} | {} | {} | {} | {} | {} |",
            pairs_label(p),
            get(Method::Ot, false),
            get(Method::Kd, false),
            get(Method::Ot, true),
            get(Method::Kd, true)
        );
    }
}

/// The image probe (only when image features were found).
fn probe_section(out: &mut String, s: &Summary) {
    if !s.anchors.iter().any(|a| a.ridge_probe.is_some()) {
        return;
    }
    out.push_str("\n## Multimodal probe (X → image)\n\nA probe, not an image-retrieval benchmark: ImageNet ResNet-50 features of the 1000 test images; a centred ridge map from the teacher's space to the image features is fitted on 500 images (the teacher's embeddings of their English captions; penalty chosen by 2-fold within that half) and read with each student's X embeddings of the other 500 captions, which rank their image among those 500; halves swapped and averaged. The same map for every student. Last checkpoints.\n\n| language | student | R@1 | R@5 | R@10 |\n|---|---|---|---|---|\n");
    for a in &s.anchors {
        let row = |name: &str, p: &Option<super::probe::ProbeMetrics>| {
            p.map(|p| format!("| {} | {name} | {:.3} | {:.3} | {:.3} |\n", a.lang, p.r1, p.r5, p.r10))
                .unwrap_or_default()
        };
        out.push_str(&row("teacher on English captions (ceiling)", &a.external.teacher_english_probe));
        out.push_str(&row("teacher zero-shot on X", &a.external.teacher_zero_shot_probe));
        out.push_str(&row("closed-form ridge student, same size", &a.ridge_probe));
        out.push_str(&row("untrained student", &a.untrained_probe));
        for c in s.cells.iter().filter(|c| c.lang == a.lang && c.pairs.is_none()) {
            if let Some(p) = &c.last.probe {
                let _ = writeln!(
                    out,
                    "| {} | {} {} start | {} | {} | {} |",
                    a.lang,
                    method_name(c.method),
                    c.start,
                    p.r1.show(3),
                    p.r5.show(3),
                    p.r10.show(3)
                );
            }
        }
    }
}

/// Links to the plots.
fn plots_section(out: &mut String, plots: &[(&str, &str)]) {
    if plots.is_empty() {
        return;
    }
    out.push_str("\n## Plots\n\nOT in orange, KD in blue; lines are means over seeds, bands span the seeds' minimum to maximum.\n\n");
    for (stem, caption) in plots {
        let _ = writeln!(out, "![{caption}]({stem}.png) ({stem}.svg)\n");
    }
}

/// Which start has a cell in the summary, in display order.
pub fn starts_present(s: &Summary) -> Vec<Start> {
    let mut v: Vec<Start> = s.cells.iter().map(|c| c.start).collect();
    v.sort();
    v.dedup();
    v
}
