//! Training material, prepared once per run: the seeded subset of training pairs tokenized for
//! the student, the teacher's outputs (in the student's output space: a PCA projection of the
//! teacher's when the student is narrower, [`Projection`]), and the dev, test and CSLS reference
//! sets.

use std::sync::Arc;

use anyhow::Result;

use crate::data::Bitext;
use crate::distill::config::{TrainConfig, TrainError};
use crate::distill::losses::Method;
use crate::eval::CslsReference;
use crate::rng::SplitMix64;
use otkd_runtime::TokenizerConfig;

use crate::student::{TokenizedSentence, TokenizedTexts, TokenizerTotals, tokenize_sentence};
use crate::teacher::TeacherOutputs;
use crate::teacher::projection::Projection;

/// Dev and test material, prepared once.
pub struct EvalSet {
    /// Student tokens of the X side.
    pub x: Vec<TokenizedSentence>,
    /// Teacher embeddings of the English side, one row per pair.
    pub en: Vec<f32>,
    /// The pair range of each language ([`Bitext::blocks`]): a multilingual set is scored per
    /// language and averaged.
    pub blocks: Vec<std::ops::Range<usize>>,
}

impl EvalSet {
    /// The pairs of `bitext` (their English sides' rows of `outputs`) for `tokenizer`.
    pub fn new(tokenizer: &TokenizerConfig, bitext: &Bitext, outputs: &TeacherOutputs) -> Self {
        Self {
            x: tokenize(tokenizer, bitext.x()),
            en: outputs.embeddings_of(&bitext.lines()),
            blocks: bitext.blocks(),
        }
    }

    /// The CSLS reference population of `train` and `dev` ([`CslsReference`]), each with the
    /// teacher outputs of its split.
    pub fn csls_reference(
        tokenizer: &TokenizerConfig,
        train: (&Bitext, &TeacherOutputs),
        dev: (&Bitext, &TeacherOutputs),
    ) -> Self {
        let reference = CslsReference::new(train.0, dev.0);
        let x = tokenize(tokenizer, reference.x());
        let all = 0..x.len();
        Self { blocks: vec![all], x, en: reference.en_embeddings(dev.1, train.1) }
    }
}

fn tokenize(tokenizer: &TokenizerConfig, texts: Vec<&str>) -> Vec<TokenizedSentence> {
    use rayon::prelude::*;
    texts.par_iter().map(|t| tokenize_sentence(tokenizer, t)).collect()
}

/// Training material, prepared once.
pub struct TrainData {
    /// Caption lines of the pairs used (the seeded subset).
    pub lines: Vec<usize>,
    /// The X side of each pair, kept as text and tokenized when read (a batch a step): held
    /// tokenized, the sides were most of a run's memory at 200k pairs (~3 KB a pair).
    pub x: TokenizedTexts,
    /// The English side of each pair, tokenized when read; empty when the English term is off
    /// (`english_weight` 0, the default).
    pub en: TokenizedTexts,
    /// What the tokenizer's caps did to the X side of the training pairs.
    pub tokenizer: TokenizerTotals,
    /// Teacher outputs for every English training caption (indexed by caption line), shared:
    /// runs of several languages, seeds and subsets read the same English outputs. In the
    /// teacher's space: the OT term reads its token states (through `projection`, if any).
    pub teacher: Arc<TeacherOutputs>,
    /// The student's targets: the teacher's embeddings of every English training caption in the
    /// student's output space (`teacher` itself without a projection; projected, without token
    /// states, with one).
    pub targets: Arc<TeacherOutputs>,
    /// The PCA projection of the teacher's space the student is distilled into, when its output
    /// is narrower than the teacher ([`crate::student::StudentConfig::projects`]): fitted on the
    /// embeddings of every English training caption.
    pub projection: Option<Projection>,
    /// Dev (val) set.
    pub dev: EvalSet,
    /// Test set (test_2016_flickr).
    pub test: EvalSet,
    /// The CSLS reference population ([`CslsReference`]): student tokens of its X side and
    /// teacher embeddings of its English side (in the student's output space, as are dev's and
    /// test's).
    pub csls_reference: EvalSet,
}

impl TrainData {
    /// Tokenizes and selects the seeded subset of training pairs.
    pub fn prepare(
        config: &TrainConfig,
        train: &Bitext,
        teacher: impl Into<Arc<TeacherOutputs>>,
        dev: (&Bitext, &TeacherOutputs),
        test: (&Bitext, &TeacherOutputs),
    ) -> Result<Self> {
        config.student.validate()?;
        let teacher = teacher.into();
        if teacher.token_states.is_none() && config.method == Method::Ot {
            anyhow::bail!("OT training needs the teacher's token states (run `otkd teacher encode`)");
        }
        for (what, bitext, outputs) in
            [("training", train, &*teacher), ("dev", dev.0, dev.1), ("test", test.0, test.1)]
        {
            if bitext.pairs.is_empty() {
                anyhow::bail!(
                    "no {what} pairs for {}-en in {} ({} lines, {} skipped for an empty side)",
                    bitext.lang,
                    bitext.split,
                    bitext.total_lines,
                    bitext.skipped.len()
                );
            }
            if let Some(line) = bitext.lines().into_iter().find(|&l| l >= outputs.len()) {
                anyhow::bail!(
                    "{} line {} has no teacher output ({} English captions encoded)",
                    bitext.split,
                    line + 1,
                    outputs.len()
                );
            }
        }
        let mut order: Vec<usize> = (0..train.pairs.len()).collect();
        if let Some(n) = config.pairs {
            if n > order.len() {
                return Err(
                    TrainError::TooFewPairs { asked: n, available: order.len(), lang: train.lang }.into()
                );
            }
            SplitMix64::new(config.seed, "pairs").shuffle(&mut order);
            order.truncate(n);
            order.sort_unstable();
        }
        if order.len() < config.batch {
            return Err(TrainError::FewerPairsThanBatch { pairs: order.len(), batch: config.batch }.into());
        }
        let projection = config
            .student
            .projects(teacher.dim)
            .then(|| Projection::fit(&teacher.embeddings, teacher.dim, config.student.out_dim))
            .transpose()?;
        let in_student_space = |outputs: &TeacherOutputs| projection.as_ref().map(|p| p.outputs(outputs));
        let targets = in_student_space(&teacher).map_or_else(|| Arc::clone(&teacher), Arc::new);
        let (dev_space, test_space) = (in_student_space(dev.1), in_student_space(test.1));
        let dev = (dev.0, dev_space.as_ref().unwrap_or(dev.1));
        let test = (test.0, test_space.as_ref().unwrap_or(test.1));
        let tok = &config.student.tokenizer;
        let pairs: Vec<_> = order.iter().map(|&i| &train.pairs[i]).collect();
        let x = TokenizedTexts::new(*tok, pairs.iter().map(|p| p.x.as_str()));
        let csls_reference = EvalSet::csls_reference(tok, (train, &targets), dev);
        let english = pairs.iter().map(|p| p.en.as_str()).filter(|_| config.loss.english_weight > 0.0);
        Ok(Self {
            lines: pairs.iter().map(|p| p.line).collect(),
            tokenizer: x.totals(),
            x,
            // Only the English term reads them.
            en: TokenizedTexts::new(*tok, english),
            dev: EvalSet::new(tok, dev.0, dev.1),
            test: EvalSet::new(tok, test.0, test.1),
            teacher,
            targets,
            projection,
            csls_reference,
        })
    }
}
