//! The student's tokenizer: words plus hashed character n-grams, no vocabulary file.
//!
//! Device and host must tokenize identically, so this is the only implementation; the host calls
//! it. The pipeline, for every query:
//!
//! 1. **Split** the text into words. A word is a maximal run of chars for which
//!    [`is_word_separator`] is false. Separators are whitespace, control chars, ASCII punctuation
//!    (the apostrophe `'` and U+2019 included, so `don't` is two words) and a fixed table of
//!    non-ASCII punctuation (see [`is_word_separator`]). Letters, digits, symbols (emoji),
//!    combining marks, ZWJ/ZWNJ and modifier letters such as U+02BC `ʼ` (Aymara `jaʼa`) stay in
//!    the word.
//! 2. **Lowercase** each char with [`char::to_lowercase`] (one char may become several; all are
//!    kept). No other normalization (no NFC/NFD).
//! 3. **Windows**: a run longer than [`TokenizerConfig::window_chars`] (16 lowercased chars by
//!    default) is cut into overlapping windows of that length, `window_stride` (half a window)
//!    apart, the last one shorter; each window is a word of its own. Why: in a script written
//!    without spaces between words (Chinese, Japanese, Thai, ...), or in German with its spaces
//!    removed, a whole clause is one run. As one word its features would stop at
//!    `max_features_per_word`, so most of the clause would be lost; as windows every char is
//!    covered, and every n-gram of up to `window - stride + 1` chars (9 by default, more than
//!    the longest n-gram) lies whole in some window. This needs no table of scripts, so it works
//!    for any script, and it leaves the features of ordinary words (up to a window long)
//!    unchanged. The window is the longest word whose features all fit the per-word cap, so the
//!    cap never drops an n-gram. Measured on German with every space removed (micro student, KD,
//!    1500 steps): test X -> en R@1 0.913 when a run was one capped word, 0.958 with windows.
//! 4. **Features** of a word, in this order: the *word feature* (a hash of the whole lowercased
//!    word), then the *n-grams* of the word wrapped in boundary marks `<` and `>`, for `n` from
//!    `min_ngram` to `max_ngram`, each `n` by position. `cat` with n = 3..5 gives
//!    `cat`, `<ca`, `cat`, `at>`, `<cat`, `cat>`, `<cat>` (the word feature and the n-gram `cat`
//!    hash differently: each hash carries a kind tag).
//! 5. **Hash** each feature with 32-bit FNV-1a over `seed` (4 bytes, little endian), a kind byte
//!    (`b'w'` for the word feature, `b'g'` for an n-gram) and the UTF-8 bytes of its chars; the
//!    feature id is `hash % buckets`.
//!
//! Every cap is reported in a [`TokenizeReport`], never silent:
//! - words (windows included) after the first `max_words` are skipped (`words_dropped`);
//! - each word gives at most `max_features_per_word` features, the word feature included; the
//!   n-grams past the cap are dropped (`features_dropped`; only with a cap so small that even a
//!   one-char word exceeds it);
//! - features that do not fit the caller's buffer are counted in `features_dropped`;
//! - runs cut into windows are counted in `long_runs` (information, not a loss).
//!
//! ```
//! use otkd_runtime::{tokenize, Feature, TokenizerConfig};
//!
//! let mut out = heapless::Vec::<Feature, 64>::new();
//! let report = tokenize(&TokenizerConfig::DEFAULT, "Cat", out.as_mut_view());
//! // One word: the word feature and the 3-, 4- and 5-grams of `<cat>`.
//! assert_eq!(report.words, 1);
//! assert_eq!(out.len(), 1 + 3 + 2 + 1);
//! assert!(out.iter().all(|f| f.word == 0 && f.id < TokenizerConfig::DEFAULT.buckets));
//! ```

use core::fmt;

use heapless::VecView;
use serde::{Deserialize, Serialize};

/// The longest window, in lowercased chars, whatever the configuration's per-word cap.
///
/// ```
/// use otkd_runtime::{TokenizerConfig, tokenizer::MAX_WINDOW_CHARS};
///
/// let generous = TokenizerConfig { max_features_per_word: u16::MAX, ..TokenizerConfig::DEFAULT };
/// assert_eq!(generous.window_chars(), MAX_WINDOW_CHARS);
/// ```
pub const MAX_WINDOW_CHARS: usize = 64;

/// The largest n-gram length a configuration may ask for.
///
/// ```
/// use otkd_runtime::{ConfigError, TokenizerConfig, tokenizer::MAX_NGRAM};
///
/// let config = TokenizerConfig { max_ngram: MAX_NGRAM + 1, ..TokenizerConfig::DEFAULT };
/// assert_eq!(config.validate(), Err(ConfigError::BadNgramRange));
/// ```
pub const MAX_NGRAM: u8 = 8;

/// Kind tag hashed before the chars of a word feature.
const KIND_WORD: u8 = b'w';
/// Kind tag hashed before the chars of an n-gram feature.
const KIND_NGRAM: u8 = b'g';
/// Boundary mark before the first char of a word, in n-grams (a separator, so never in a word).
const BOUNDARY_START: char = '<';
/// Boundary mark after the last char of a word, in n-grams (a separator, so never in a word).
const BOUNDARY_END: char = '>';

/// Parameters of the tokenizer; part of a trained student, so stored with it.
///
/// Check a configuration with [`TokenizerConfig::validate`] before use.
///
/// ```
/// use otkd_runtime::TokenizerConfig;
///
/// let config = TokenizerConfig { buckets: 1 << 12, ..TokenizerConfig::default() };
/// config.validate()?;
/// assert_eq!(config.max_ngram, 5);
/// # Ok::<(), otkd_runtime::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizerConfig {
    /// Number of hash buckets: every feature id is in `0..buckets`.
    pub buckets: u32,
    /// Seed hashed into every feature.
    pub seed: u32,
    /// Shortest n-gram, in chars, boundary marks included (default 3).
    pub min_ngram: u8,
    /// Longest n-gram, in chars, boundary marks included (default 5, at most [`MAX_NGRAM`]).
    pub max_ngram: u8,
    /// Words kept per query; later words are dropped and counted (default 64).
    pub max_words: u16,
    /// Features kept per word, the word feature included; later n-grams are dropped and counted
    /// (default 48).
    pub max_features_per_word: u16,
}

impl TokenizerConfig {
    /// The default configuration: 16384 buckets, seed `0x6f746b64` (`"otkd"`), n-grams 3..=5,
    /// 64 words, 48 features per word.
    ///
    /// ```
    /// use otkd_runtime::TokenizerConfig;
    ///
    /// assert_eq!(TokenizerConfig::DEFAULT.buckets, 16384);
    /// assert_eq!(TokenizerConfig::DEFAULT, TokenizerConfig::default());
    /// ```
    pub const DEFAULT: Self = Self {
        buckets: 1 << 14,
        seed: 0x6f74_6b64,
        min_ngram: 3,
        max_ngram: 5,
        max_words: 64,
        max_features_per_word: 48,
    };

    /// Checks the configuration: `buckets > 0`, `1 <= min_ngram <= max_ngram <= 8`,
    /// `max_words > 0` and `max_features_per_word > 0`.
    ///
    /// [`tokenize`] never panics on an invalid configuration, but its output is then of no use:
    /// callers validate first.
    ///
    /// ```
    /// use otkd_runtime::{ConfigError, TokenizerConfig};
    ///
    /// assert_eq!(TokenizerConfig::DEFAULT.validate(), Ok(()));
    /// let bad = TokenizerConfig { min_ngram: 6, max_ngram: 4, ..TokenizerConfig::DEFAULT };
    /// assert_eq!(bad.validate(), Err(ConfigError::BadNgramRange));
    /// ```
    pub const fn validate(&self) -> Result<(), ConfigError> {
        if self.buckets == 0 {
            Err(ConfigError::ZeroBuckets)
        } else if self.min_ngram == 0 || self.min_ngram > self.max_ngram || self.max_ngram > MAX_NGRAM {
            Err(ConfigError::BadNgramRange)
        } else if self.max_words == 0 {
            Err(ConfigError::ZeroMaxWords)
        } else if self.max_features_per_word == 0 {
            Err(ConfigError::ZeroMaxFeaturesPerWord)
        } else {
            Ok(())
        }
    }
}

impl TokenizerConfig {
    /// The window length: the longest word, in lowercased chars (at most [`MAX_WINDOW_CHARS`],
    /// at least 1), whose word feature and n-grams all fit `max_features_per_word`. Runs longer
    /// than this are cut into overlapping windows (see the [module docs](self)).
    ///
    /// ```
    /// use otkd_runtime::TokenizerConfig;
    ///
    /// // n = 3..=5 and a cap of 48: a 16-char word has 1 + 16 + 15 + 14 = 46 features.
    /// assert_eq!(TokenizerConfig::DEFAULT.window_chars(), 16);
    /// ```
    pub const fn window_chars(&self) -> usize {
        let (min, max) = (self.min_ngram as usize, self.max_ngram as usize);
        let cap = self.max_features_per_word as usize;
        let mut chars = MAX_WINDOW_CHARS;
        while chars > 1 && 1 + ngram_count(chars, min, max) > cap {
            chars -= 1;
        }
        chars
    }

    /// The most features one word (or window) gives: its word feature and the n-grams of a
    /// word [`window_chars`](Self::window_chars) long, at most `max_features_per_word`. A buffer
    /// of `words` times this holds every feature of `words` words.
    ///
    /// ```
    /// use otkd_runtime::TokenizerConfig;
    ///
    /// // 1 + 16 + 15 + 14 for a 16-char window with n = 3..=5.
    /// assert_eq!(TokenizerConfig::DEFAULT.max_features_per_window(), 46);
    /// ```
    pub const fn max_features_per_window(&self) -> usize {
        let all = 1 + ngram_count(self.window_chars(), self.min_ngram as usize, self.max_ngram as usize);
        let cap = self.max_features_per_word as usize;
        if all < cap { all } else { cap }
    }

    /// How far apart consecutive windows of a long run start: half a window (at least 1 char).
    ///
    /// ```
    /// use otkd_runtime::TokenizerConfig;
    ///
    /// assert_eq!(TokenizerConfig::DEFAULT.window_stride(), 8);
    /// ```
    pub const fn window_stride(&self) -> usize {
        let half = self.window_chars() / 2;
        if half == 0 { 1 } else { half }
    }

    /// This configuration with every character a word of its own: the per-word cap becomes the
    /// feature count of a one-char word, so [`window_chars`](Self::window_chars) is 1 and each
    /// char of a run is a window, with its word feature and the n-grams of `<c>`. Why: in a
    /// script where one character is a word (Han), words are the unit the encoder should attend
    /// over, and n-grams across characters are spans across word boundaries. Measured on German
    /// written as one CJK ideograph per word without spaces (closed-form ridge student, test
    /// X -> en R@1): n = 1..=3 over the run 0.795, one-char words 0.945; spaced German 0.983.
    ///
    /// ```
    /// use otkd_runtime::{tokenize, Feature, TokenizerConfig};
    ///
    /// let chars = TokenizerConfig { min_ngram: 1, max_ngram: 3, ..TokenizerConfig::DEFAULT }.with_char_words();
    /// assert!(chars.has_char_words() && !TokenizerConfig::DEFAULT.has_char_words());
    /// // `<c>` has 3 + 2 + 1 n-grams of 1..=3 chars, and the word feature.
    /// assert_eq!(chars.max_features_per_word, 7);
    /// let mut out = heapless::Vec::<Feature, 64>::new();
    /// let report = tokenize(&chars, "狗跑", out.as_mut_view());
    /// assert_eq!((report.words, out.len(), report.features_dropped), (2, 14, 0));
    /// ```
    pub const fn with_char_words(self) -> Self {
        // `<c>` has at most 3 + 2 + 1 n-grams, whatever the range: the count fits a u16.
        #[allow(clippy::cast_possible_truncation)]
        let cap = (1 + ngram_count(1, self.min_ngram as usize, self.max_ngram as usize)) as u16;
        Self { max_features_per_word: cap, ..self }
    }

    /// Whether every character is a word of its own (a window of one char; see
    /// [`with_char_words`](Self::with_char_words)).
    ///
    /// ```
    /// use otkd_runtime::TokenizerConfig;
    ///
    /// assert!(TokenizerConfig::DEFAULT.with_char_words().has_char_words());
    /// ```
    pub const fn has_char_words(&self) -> bool {
        self.window_chars() == 1
    }
}

impl Default for TokenizerConfig {
    /// [`TokenizerConfig::DEFAULT`].
    ///
    /// ```
    /// use otkd_runtime::TokenizerConfig;
    ///
    /// assert_eq!(TokenizerConfig::default().seed, 0x6f746b64);
    /// ```
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a [`TokenizerConfig`] is invalid.
///
/// ```
/// use otkd_runtime::{ConfigError, TokenizerConfig};
///
/// let config = TokenizerConfig { buckets: 0, ..TokenizerConfig::DEFAULT };
/// assert_eq!(config.validate(), Err(ConfigError::ZeroBuckets));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// `buckets` is 0.
    ZeroBuckets,
    /// The n-gram range is not `1 <= min_ngram <= max_ngram <= 8`.
    BadNgramRange,
    /// `max_words` is 0.
    ZeroMaxWords,
    /// `max_features_per_word` is 0.
    ZeroMaxFeaturesPerWord,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ZeroBuckets => "tokenizer config: buckets must be > 0",
            Self::BadNgramRange => "tokenizer config: n-gram range must be 1 <= min <= max <= 8",
            Self::ZeroMaxWords => "tokenizer config: max_words must be > 0",
            Self::ZeroMaxFeaturesPerWord => "tokenizer config: max_features_per_word must be > 0",
        })
    }
}

impl core::error::Error for ConfigError {}

/// One hashed feature of a query.
///
/// ```
/// use otkd_runtime::{tokenize, Feature, TokenizerConfig};
///
/// let mut out = heapless::Vec::<Feature, 64>::new();
/// tokenize(&TokenizerConfig::DEFAULT, "a b", out.as_mut_view());
/// // `a`: word feature, `<a>`; `b`: the same for word 1.
/// assert_eq!(out.iter().map(|f| f.word).collect::<Vec<_>>(), [0, 0, 1, 1]);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feature {
    /// Index of the word in the query, counting kept words only, from 0.
    pub word: u16,
    /// Bucket of the feature, in `0..buckets`.
    pub id: u32,
}

/// What [`tokenize`] kept and what it had to drop.
///
/// ```
/// use otkd_runtime::{tokenize, Feature, TokenizerConfig};
///
/// let config = TokenizerConfig { max_words: 2, ..TokenizerConfig::DEFAULT };
/// let mut out = heapless::Vec::<Feature, 64>::new();
/// let report = tokenize(&config, "one two three", out.as_mut_view());
/// assert_eq!((report.words, report.words_dropped), (2, 1));
/// assert!(!report.is_lossless());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenizeReport {
    /// Words kept; each has at least one feature (its word feature) in the output.
    pub words: u16,
    /// Words skipped because they came after the first `max_words` words.
    pub words_dropped: u32,
    /// Features dropped: n-grams past `max_features_per_word`, plus features (of words within
    /// `max_words`) that did not fit the output buffer.
    pub features_dropped: u32,
    /// Runs longer than a window, cut into overlapping windows (each window counts as a word).
    pub long_runs: u32,
}

impl TokenizeReport {
    /// True when nothing was dropped (windowing a long run loses nothing).
    ///
    /// ```
    /// use otkd_runtime::{tokenize, Feature, TokenizerConfig};
    ///
    /// let mut out = heapless::Vec::<Feature, 2>::new();
    /// let report = tokenize(&TokenizerConfig::DEFAULT, "hello", out.as_mut_view());
    /// // `hello` has 13 features; 2 fit.
    /// assert_eq!(report.features_dropped, 13 - 2);
    /// assert!(!report.is_lossless());
    /// ```
    pub fn is_lossless(&self) -> bool {
        self.words_dropped == 0 && self.features_dropped == 0
    }
}

/// True for the chars that separate words: whitespace, control chars, ASCII punctuation and a
/// fixed table of non-ASCII punctuation.
///
/// The table (core has no Unicode punctuation data): Latin-1 `¡ § « ¶ » ¿`; Greek `; ·`;
/// Armenian, Hebrew (maqaf, paseq, sof pasuq, nun hafukha), Arabic, Devanagari, Thai, Tibetan,
/// Myanmar, Georgian, Ethiopic, Canadian syllabics, Ogham, Runic, Khmer, Mongolian, Lisu, Vai and
/// Bamum sentence and word punctuation; U+200B zero width space; General Punctuation
/// U+2010–U+2027 and U+2030–U+205E (dashes, quotes including U+2019, bullets, ellipsis);
/// super/subscript parentheses; Supplemental Punctuation U+2E00–U+2E7F except U+2E2F; CJK
/// punctuation `、。〃〈〉《》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〽゠・`; U+FEFF; vertical, CJK
/// compatibility and small forms U+FE10–U+FE19, U+FE30–U+FE6B; fullwidth and halfwidth
/// punctuation (the fullwidth twins of ASCII punctuation, `｟｠｡｢｣､･`).
///
/// Not separators: letters (U+02BC `ʼ` included), digits, combining marks, ZWJ/ZWNJ, symbols
/// such as emoji, U+00B7 `·` (Catalan `l·l`) and the Hebrew geresh and gershayim.
///
/// ```
/// use otkd_runtime::tokenizer::is_word_separator;
///
/// assert!(is_word_separator(' ') && is_word_separator('\'') && is_word_separator('\u{2019}'));
/// assert!(is_word_separator('。') && is_word_separator('¿'));
/// assert!(!is_word_separator('\u{2bc}') && !is_word_separator('\u{301}') && !is_word_separator('ĩ'));
/// ```
pub fn is_word_separator(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation() || c.is_ascii_whitespace() || c.is_ascii_control();
    }
    c.is_whitespace()
        || c.is_control()
        || matches!(
            u32::from(c),
            0x00A1
                | 0x00A7
                | 0x00AB
                | 0x00B6
                | 0x00BB
                | 0x00BF
                | 0x037E
                | 0x0387
                | 0x055A..=0x055F
                | 0x0589..=0x058A
                | 0x05BE
                | 0x05C0
                | 0x05C3
                | 0x05C6
                | 0x0609..=0x060A
                | 0x060C..=0x060D
                | 0x061B
                | 0x061D..=0x061F
                | 0x066A..=0x066D
                | 0x06D4
                | 0x0964..=0x0965
                | 0x0970
                | 0x0E4F
                | 0x0E5A..=0x0E5B
                | 0x0F0D..=0x0F12
                | 0x104A..=0x104F
                | 0x10FB
                | 0x1360..=0x1368
                | 0x1400
                | 0x166E
                | 0x169B..=0x169C
                | 0x16EB..=0x16ED
                | 0x17D4..=0x17D6
                | 0x17D8..=0x17DA
                | 0x1800..=0x180A
                | 0x200B
                | 0x2010..=0x2027
                | 0x2030..=0x205E
                | 0x207D..=0x207E
                | 0x208D..=0x208E
                | 0x2E00..=0x2E2E
                | 0x2E30..=0x2E7F
                | 0x3001..=0x3003
                | 0x3008..=0x3011
                | 0x3014..=0x301F
                | 0x3030
                | 0x303D
                | 0x30A0
                | 0x30FB
                | 0xA4FE..=0xA4FF
                | 0xA60D..=0xA60F
                | 0xA6F2..=0xA6F7
                | 0xFEFF
                | 0xFE10..=0xFE19
                | 0xFE30..=0xFE6B
                | 0xFF01..=0xFF0F
                | 0xFF1A..=0xFF20
                | 0xFF3B..=0xFF40
                | 0xFF5B..=0xFF65
        )
}

/// Streaming 32-bit FNV-1a.
#[derive(Clone, Copy)]
struct Fnv1a(u32);

impl Fnv1a {
    const OFFSET_BASIS: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;

    /// A hash primed with the seed and the kind tag of a feature.
    fn feature(seed: u32, kind: u8) -> Self {
        let mut h = Self(Self::OFFSET_BASIS);
        h.bytes(&seed.to_le_bytes());
        h.bytes(&[kind]);
        h
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u32::from(b)).wrapping_mul(Self::PRIME);
        }
    }

    fn char(&mut self, c: char) {
        let mut utf8 = [0u8; 4];
        self.bytes(c.encode_utf8(&mut utf8).as_bytes());
    }
}

/// Number of n-grams of a word of `chars` chars wrapped in boundary marks, for `n` in
/// `min..=max`.
const fn ngram_count(chars: usize, min: usize, max: usize) -> usize {
    let padded = chars + 2;
    let mut n = min;
    let mut total = 0;
    while n <= max {
        total += (padded + 1).saturating_sub(n);
        n += 1;
    }
    total
}

/// The tokenizer state shared by all words of one query.
struct Emitter<'a> {
    buckets: u32,
    seed: u32,
    min_ngram: usize,
    max_ngram: usize,
    max_features_per_word: usize,
    max_words: u32,
    /// Words (windows) met so far, kept or not.
    seen: u32,
    out: &'a mut VecView<Feature>,
    report: TokenizeReport,
}

impl Emitter<'_> {
    /// Emits the features of one word (a whole run, or one window of a long run): `chars` are its
    /// lowercased chars.
    fn word(&mut self, chars: &[char]) {
        let r = &mut self.report;
        self.seen = self.seen.saturating_add(1);
        if self.seen > self.max_words {
            r.words_dropped = r.words_dropped.saturating_add(1);
            return;
        }
        let total = 1 + ngram_count(chars.len(), self.min_ngram, self.max_ngram);
        let mut emitted = 0usize;
        let word = r.words;
        let mut word_hash = Fnv1a::feature(self.seed, KIND_WORD);
        chars.iter().for_each(|&c| word_hash.char(c));
        if self.out.push(Feature { word, id: word_hash.0 % self.buckets }).is_ok() {
            emitted = 1;
            r.words = r.words.saturating_add(1);
            let padded = chars.len() + 2;
            'grams: for n in self.min_ngram..=self.max_ngram {
                for start in 0..(padded + 1).saturating_sub(n) {
                    if emitted >= self.max_features_per_word || self.out.is_full() {
                        break 'grams;
                    }
                    let mut h = Fnv1a::feature(self.seed, KIND_NGRAM);
                    for i in start..start + n {
                        h.char(padded_char(chars, i));
                    }
                    // Cannot fail: `is_full` was checked above.
                    let _ = self.out.push(Feature { word, id: h.0 % self.buckets });
                    emitted += 1;
                }
            }
        }
        let dropped = u32::try_from(total - emitted).unwrap_or(u32::MAX);
        r.features_dropped = r.features_dropped.saturating_add(dropped);
    }
}

/// Char `i` of `<word>`.
fn padded_char(chars: &[char], i: usize) -> char {
    match i.checked_sub(1) {
        None => BOUNDARY_START,
        Some(j) => chars.get(j).copied().unwrap_or(BOUNDARY_END),
    }
}

/// Tokenizes `text` into hashed features, written to `out` (cleared first).
///
/// Features come out grouped by word, in word order; the word feature first, then n-grams by n
/// then position (see the [module docs](self) for the whole pipeline). Duplicate ids within a
/// word are kept: they act as weights. Never panics; when `out` fills up, the remaining features
/// are counted in [`TokenizeReport::features_dropped`] (a word whose word feature does not fit is
/// not counted in [`TokenizeReport::words`]).
///
/// The configuration must be validated by the caller ([`TokenizerConfig::validate`]). An invalid
/// one does not panic either: with `buckets`, `max_words` or `max_features_per_word` at 0 no
/// feature is emitted and every word is counted in `words_dropped`; the n-gram range is clamped
/// to `1 <= min <= max <= 8`.
///
/// ```
/// use otkd_runtime::{tokenize, Feature, TokenizerConfig};
///
/// let config = TokenizerConfig::DEFAULT;
/// config.validate()?;
/// let mut out = heapless::Vec::<Feature, 128>::new();
/// let report = tokenize(&config, "Ñande rekove", out.as_mut_view());
/// assert_eq!(report.words, 2);
/// assert!(report.is_lossless());
/// // The word feature of "rekove" opens word 1.
/// let first = out.iter().position(|f| f.word == 1).unwrap();
/// assert_eq!(first, 1 + 5 + 4 + 3);
/// # Ok::<(), otkd_runtime::ConfigError>(())
/// ```
pub fn tokenize(config: &TokenizerConfig, text: &str, out: &mut VecView<Feature>) -> TokenizeReport {
    out.clear();
    let usable = config.buckets > 0 && config.max_features_per_word > 0;
    let min_ngram = config.min_ngram.clamp(1, MAX_NGRAM);
    let max_ngram = config.max_ngram.clamp(min_ngram, MAX_NGRAM);
    let clamped = TokenizerConfig { min_ngram, max_ngram, ..*config };
    // An unusable configuration emits nothing; its words are counted whole.
    let (window, stride) =
        if usable { (clamped.window_chars(), clamped.window_stride()) } else { (MAX_WINDOW_CHARS, 1) };
    let mut emitter = Emitter {
        buckets: config.buckets.max(1),
        seed: config.seed,
        min_ngram: usize::from(min_ngram),
        max_ngram: usize::from(max_ngram),
        max_features_per_word: usize::from(config.max_features_per_word),
        max_words: if usable { u32::from(config.max_words) } else { 0 },
        seen: 0,
        out,
        report: TokenizeReport::default(),
    };

    // The current run's lowercased chars not yet covered by a window: a whole word while the run
    // is at most `window` chars long; once it is longer, its first `window` chars are emitted as
    // one word and the buffer slides by `stride`, so consecutive windows overlap by
    // `window - stride` chars.
    let mut chars = ['\0'; MAX_WINDOW_CHARS];
    let mut len = 0usize;
    let mut windowed = false;
    let end_run = |emitter: &mut Emitter<'_>, chars: &[char], windowed: bool| {
        // After a window, the first `window - stride` buffered chars were in it already.
        if !windowed || chars.len() > window - stride {
            emitter.word(chars);
        }
        if windowed {
            emitter.report.long_runs = emitter.report.long_runs.saturating_add(1);
        }
    };
    for c in text.chars() {
        if is_word_separator(c) {
            if len > 0 {
                end_run(&mut emitter, chars.get(..len).unwrap_or(&[]), windowed);
            }
            len = 0;
            windowed = false;
            continue;
        }
        for lower in c.to_lowercase() {
            if len == window {
                emitter.word(chars.get(..window).unwrap_or(&[]));
                chars.copy_within(stride..window, 0);
                len = window - stride;
                windowed = true;
            }
            if let Some(slot) = chars.get_mut(len) {
                *slot = lower;
                len += 1;
            }
        }
    }
    if len > 0 {
        end_run(&mut emitter, chars.get(..len).unwrap_or(&[]), windowed);
    }
    emitter.report
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    // ---- An independent reference, built with std (String, Vec) ----

    fn fnv1a(bytes: &[u8]) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for &b in bytes {
            h ^= b as u32;
            h = h.wrapping_mul(16_777_619);
        }
        h
    }

    fn feature_hash(seed: u32, kind: u8, s: &str) -> u32 {
        let mut bytes = seed.to_le_bytes().to_vec();
        bytes.push(kind);
        bytes.extend_from_slice(s.as_bytes());
        fnv1a(&bytes)
    }

    /// The words of `text` after windowing: whole runs up to a window long, else windows of
    /// `window` chars starting every `stride` chars while one fits, then the rest, if any of it
    /// is past the last window. Also returns the number of windowed runs.
    fn reference_words(config: &TokenizerConfig, text: &str) -> (Vec<Vec<char>>, u32) {
        let (window, stride) = (config.window_chars(), config.window_stride());
        let mut words = Vec::new();
        let mut long_runs = 0;
        for run in text.split(is_word_separator).filter(|w| !w.is_empty()) {
            let lower: Vec<char> = run.chars().flat_map(char::to_lowercase).collect();
            if lower.len() <= window {
                words.push(lower);
                continue;
            }
            long_runs += 1;
            let mut start = 0;
            while start + window < lower.len() {
                words.push(lower[start..start + window].to_vec());
                start += stride;
            }
            if lower.len() - start > window - stride {
                words.push(lower[start..].to_vec());
            }
        }
        (words, long_runs)
    }

    /// The features of every word within `max_words` (after the per-word cap), and the report
    /// counts that do not depend on the output capacity.
    fn reference(config: &TokenizerConfig, text: &str) -> (Vec<Vec<u32>>, u32, u32, u32) {
        let (words, long_runs) = reference_words(config, text);
        let max_words = config.max_words as usize;
        let kept = words.len().min(max_words);
        let mut cap_dropped = 0u32;
        let mut features = Vec::new();
        for w in &words[..kept] {
            let lower: String = w.iter().collect();
            let padded: Vec<char> =
                core::iter::once('<').chain(w.iter().copied()).chain(core::iter::once('>')).collect();
            let mut f = vec![feature_hash(config.seed, b'w', &lower) % config.buckets];
            for n in config.min_ngram as usize..=config.max_ngram as usize {
                for win in padded.windows(n) {
                    let s: String = win.iter().collect();
                    f.push(feature_hash(config.seed, b'g', &s) % config.buckets);
                }
            }
            let cap = config.max_features_per_word as usize;
            if f.len() > cap {
                cap_dropped += (f.len() - cap) as u32;
                f.truncate(cap);
            }
            features.push(f);
        }
        let words_dropped = (words.len() - kept) as u32;
        (features, words_dropped, cap_dropped, long_runs)
    }

    /// Checks `tokenize` against the reference, with an output of capacity `N`.
    fn check<const N: usize>(config: &TokenizerConfig, text: &str) -> TokenizeReport {
        let mut out = heapless::Vec::<Feature, N>::new();
        let report = tokenize(config, text, out.as_mut_view());
        let (words, words_dropped, cap_dropped, long_runs) = reference(config, text);
        let mut expected = Vec::new();
        let mut expected_words = 0u16;
        let mut overflow = 0u32;
        for (i, f) in words.iter().enumerate() {
            let room = N - expected.len().min(N);
            if room > 0 {
                expected_words += 1;
            }
            let fit = f.len().min(room);
            expected.extend(f[..fit].iter().map(|&id| Feature { word: i as u16, id }));
            overflow += (f.len() - fit) as u32;
        }
        assert_eq!(out.as_slice(), expected.as_slice(), "features of {text:?}");
        let want = TokenizeReport {
            words: expected_words,
            words_dropped,
            features_dropped: cap_dropped + overflow,
            long_runs,
        };
        assert_eq!(report, want, "report of {text:?}");
        report
    }

    fn ids(config: &TokenizerConfig, text: &str) -> Vec<(u16, u32)> {
        let mut out = heapless::Vec::<Feature, 512>::new();
        tokenize(config, text, out.as_mut_view());
        out.iter().map(|f| (f.word, f.id)).collect()
    }

    // ---- Hash and configuration ----

    #[test]
    fn fnv1a_matches_published_vectors() {
        // From the FNV reference test suite (32-bit FNV-1a).
        assert_eq!(fnv1a(b""), 0x811c_9dc5);
        assert_eq!(fnv1a(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a(b"foobar"), 0xbf9c_f968);
        let mut h = Fnv1a(Fnv1a::OFFSET_BASIS);
        h.bytes(b"foobar");
        assert_eq!(h.0, 0xbf9c_f968);
    }

    #[test]
    fn validate_names_each_error() {
        let d = TokenizerConfig::DEFAULT;
        assert_eq!(d.validate(), Ok(()));
        let cases = [
            (TokenizerConfig { buckets: 0, ..d }, ConfigError::ZeroBuckets),
            (TokenizerConfig { min_ngram: 0, ..d }, ConfigError::BadNgramRange),
            (TokenizerConfig { min_ngram: 6, ..d }, ConfigError::BadNgramRange),
            (TokenizerConfig { max_ngram: 9, ..d }, ConfigError::BadNgramRange),
            (TokenizerConfig { max_words: 0, ..d }, ConfigError::ZeroMaxWords),
            (TokenizerConfig { max_features_per_word: 0, ..d }, ConfigError::ZeroMaxFeaturesPerWord),
        ];
        for (config, err) in cases {
            assert_eq!(config.validate(), Err(err));
            assert!(!err.to_string().is_empty());
        }
        let ok = TokenizerConfig { min_ngram: 1, max_ngram: 8, ..d };
        assert_eq!(ok.validate(), Ok(()));
    }

    #[test]
    fn invalid_configs_do_not_panic_and_report() {
        let d = TokenizerConfig::DEFAULT;
        for config in [
            TokenizerConfig { buckets: 0, ..d },
            TokenizerConfig { max_words: 0, ..d },
            TokenizerConfig { max_features_per_word: 0, ..d },
        ] {
            let mut out = heapless::Vec::<Feature, 16>::new();
            let r = tokenize(&config, "two words", out.as_mut_view());
            assert!(out.is_empty());
            assert_eq!((r.words, r.words_dropped), (0, 2));
        }
        // The n-gram range is clamped: 0..=0 acts as 1..=1, 9..=2 as 8..=8.
        let clamped = TokenizerConfig { min_ngram: 0, max_ngram: 0, ..d };
        assert_eq!(ids(&clamped, "ab"), ids(&TokenizerConfig { min_ngram: 1, max_ngram: 1, ..d }, "ab"));
        let clamped = TokenizerConfig { min_ngram: 9, max_ngram: 2, ..d };
        assert_eq!(
            ids(&clamped, "abcdefgh"),
            ids(&TokenizerConfig { min_ngram: 8, max_ngram: 8, ..d }, "abcdefgh")
        );
    }

    #[test]
    fn config_serde_round_trip() {
        let d = TokenizerConfig { seed: 7, ..TokenizerConfig::DEFAULT };
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<TokenizerConfig>(&json).unwrap(), d);
    }

    // ---- Pinned vectors: change these only with a new blob version ----

    /// A configuration, a text and its `(word, id)` features.

    #[test]
    fn pinned_vectors() {
        let d = TokenizerConfig::DEFAULT;
        let config = |name: &str| match name {
            "d" => d,
            "small" => TokenizerConfig { buckets: 1000, seed: 1, min_ngram: 1, max_ngram: 2, ..d },
            "narrow" => TokenizerConfig {
                buckets: 997,
                seed: 7,
                min_ngram: 2,
                max_ngram: 3,
                max_features_per_word: 12,
                ..d
            },
            "chars" => TokenizerConfig { min_ngram: 1, max_ngram: 3, ..d }.with_char_words(),
            other => panic!("unknown config {other}"),
        };
        // Made by an independent implementation: `python3 scripts/tokenizer_vectors.py`.
        type Case = (&'static str, &'static str, &'static [(u16, u32)]);
        let cases: &[Case] = include!("tokenizer_vectors.in");
        assert!(cases.len() >= 10);
        for &(name, text, want) in cases {
            assert_eq!(ids(&config(name), text), want, "{name}: {text:?}");
        }
    }

    #[test]
    fn word_and_ngram_of_same_text_hash_differently() {
        let d = TokenizerConfig::DEFAULT;
        let f = ids(&d, "the");
        // f[0] is the word feature, f[2] the n-gram "the".
        assert_ne!(f[0].1, f[2].1);
        assert_eq!(f[0].1, feature_hash(d.seed, b'w', "the") % d.buckets);
        assert_eq!(f[2].1, feature_hash(d.seed, b'g', "the") % d.buckets);
        // A different seed moves every feature.
        let other = TokenizerConfig { seed: 1, ..d };
        assert_ne!(ids(&other, "the"), f);
    }

    // ---- Word splitting ----

    fn word_count(text: &str) -> u16 {
        let mut out = heapless::Vec::<Feature, 4096>::new();
        tokenize(&TokenizerConfig::DEFAULT, text, out.as_mut_view()).words
    }

    #[test]
    fn splitting_rules() {
        assert_eq!(word_count(""), 0);
        assert_eq!(word_count("  \t\n "), 0);
        assert_eq!(word_count("!?.,;:'\"()[]{}«»¿¡…—–“”‘’。、！？"), 0);
        // U+02BC stays inside the word (Aymara); ASCII ' and U+2019 split.
        assert_eq!(word_count("jaʼa"), 1);
        assert_eq!(word_count("don't"), 2);
        assert_eq!(word_count("don\u{2019}t"), 2);
        // Combining marks and Guarani nasal vowels stay in the word.
        assert_eq!(word_count("e\u{301}"), 1);
        assert_eq!(word_count("ĩ ẽ î û"), 4);
        assert_eq!(word_count("Mba'éichapa reiko"), 3);
        // CJK without spaces is one word; ideographic punctuation splits.
        assert_eq!(word_count("東京タワー"), 1);
        assert_eq!(word_count("東京、タワー。"), 2);
        // Emoji (with ZWJ) form words of their own.
        assert_eq!(word_count("👩\u{200d}🔬 ok"), 2);
        assert_eq!(word_count("a\u{00a0}b\u{3000}c"), 3);
    }

    #[test]
    fn lowercasing_expands_and_is_kept() {
        let d = TokenizerConfig::DEFAULT;
        // U+0130 lowercases to "i\u{307}" (two chars).
        assert_eq!(ids(&d, "İ"), ids(&d, "i\u{307}"));
        assert_eq!(ids(&d, "ÑANDE"), ids(&d, "ñande"));
        check::<512>(&d, "İSTANBUL ẞ ΣΟΦΙΑ");
    }

    // ---- Caps ----

    #[test]
    fn caps_are_reported() {
        let d = TokenizerConfig::DEFAULT;
        // 100 words: 36 dropped.
        let text = "w ".repeat(100);
        let r = check::<512>(&d, &text);
        assert_eq!((r.words, r.words_dropped), (64, 36));
        // A full output: word 0 fits partly, word 1 not at all.
        let r = check::<5>(&d, "hello world");
        assert_eq!((r.words, r.features_dropped), (1, 13 + 13 - 5));
        // An output with room for nothing.
        let r = check::<0>(&d, "hello");
        assert_eq!((r.words, r.features_dropped), (0, 13));
        // A cap below a one-char word's 4 features (word, <a>, and no 4- or 5-grams... plus
        // `<a>` is the only 3-gram): windows of one char, n-grams past the cap counted.
        let tiny = TokenizerConfig { max_features_per_word: 1, ..d };
        assert_eq!(tiny.window_chars(), 1);
        let r = check::<512>(&tiny, "ab");
        assert_eq!((r.words, r.features_dropped, r.long_runs), (2, 2, 1));
    }

    #[test]
    fn long_runs_become_overlapping_windows_and_lose_nothing() {
        let d = TokenizerConfig::DEFAULT;
        let (window, stride) = (d.window_chars(), d.window_stride());
        assert_eq!((window, stride), (16, 8));
        // A word of exactly one window is unchanged: one word, no window.
        let r = check::<512>(&d, &"a".repeat(window));
        assert_eq!((r.words, r.long_runs), (1, 0));
        // 20 chars: windows [0, 16) and [8, 20).
        let r = check::<512>(&d, "abcdefghijklmnopqrst");
        assert_eq!((r.words, r.long_runs, r.features_dropped), (2, 1, 0));
        assert_eq!(ids(&d, "abcdefghijklmnopqrst")[..46], ids(&d, "abcdefghijklmnop")[..]);
        assert_eq!(
            ids(&d, "abcdefghijklmnopqrst")[46..].iter().map(|&(_, id)| id).collect::<Vec<_>>(),
            ids(&d, "ijklmnopqrst").iter().map(|&(_, id)| id).collect::<Vec<_>>()
        );
        // 24 chars: windows [0, 16) and [8, 24); nothing after.
        let r = check::<512>(&d, &"x".repeat(24));
        assert_eq!((r.words, r.long_runs), (2, 1));
        // Every n-gram of a long run is in some window: German with its spaces removed.
        let unspaced = "EinMannmitorangefarbenemHutderetwasanstarrt";
        let grams: std::collections::BTreeSet<u32> = ids(&d, unspaced).iter().map(|f| f.1).collect();
        let lower: Vec<char> = unspaced.to_lowercase().chars().collect();
        for n in 3..=5 {
            for w in lower.windows(n) {
                let g: String = w.iter().collect();
                assert!(grams.contains(&(feature_hash(d.seed, b'g', &g) % d.buckets)), "{g}");
            }
        }
        assert!(check::<4096>(&d, unspaced).is_lossless());
    }

    #[test]
    fn unspaced_scripts_keep_their_information() {
        let d = TokenizerConfig::DEFAULT;
        // Chinese, Japanese and Thai clauses longer than a window: cut into windows, nothing lost.
        for text in [
            "一个穿着橙色帽子的男人正在盯着什么东西看着远方的风景",
            "オレンジ色の帽子をかぶった男性が何かをじっと見つめている",
            "ผู้ชายสวมหมวกสีส้มกำลังจ้องมองบางสิ่งบางอย่างอยู่",
        ] {
            let r = check::<4096>(&d, text);
            assert!(r.is_lossless(), "{text}: {r:?}");
            assert_eq!(r.long_runs, 1, "{text}");
            let chars = text.chars().count();
            assert!(usize::from(r.words) >= chars / d.window_stride() - 1, "{text}: {} words", r.words);
        }
        // Two clauses that share only their second half still share its n-grams (as one word
        // each, capped at 48 features, they would share none of them).
        let shared = "正在盯着什么东西看着远方的风景";
        let a: std::collections::BTreeSet<u32> =
            ids(&d, &format!("一个穿着橙色帽子的男人{shared}")).iter().map(|f| f.1).collect();
        let b: std::collections::BTreeSet<u32> =
            ids(&d, &format!("两个女孩子在公园里{shared}")).iter().map(|f| f.1).collect();
        assert!(a.intersection(&b).count() > 20, "{}", a.intersection(&b).count());
    }

    #[test]
    fn out_is_cleared_first() {
        let mut out = heapless::Vec::<Feature, 64>::new();
        out.push(Feature { word: 9, id: 9 }).unwrap();
        tokenize(&TokenizerConfig::DEFAULT, "a", out.as_mut_view());
        assert!(out.iter().all(|f| f.word == 0));
    }

    // ---- Property-style: arbitrary strings ----

    /// xorshift32 (Marsaglia 2003).
    struct XorShift(u32);

    impl XorShift {
        fn next(&mut self) -> u32 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u32) -> u32 {
            self.next() % n
        }

        fn string(&mut self, max_chars: u32) -> String {
            const PALETTE: &[char] = &[
                'a',
                'Z',
                ' ',
                '\t',
                '\n',
                '\'',
                '\u{2019}',
                '\u{2bc}',
                '\u{301}',
                'ĩ',
                'ẽ',
                'î',
                'û',
                'Ñ',
                'İ',
                'ẞ',
                'Σ',
                '東',
                '。',
                '、',
                '😀',
                '\u{200d}',
                '\u{fe0f}',
                '-',
                '.',
                '!',
                '¿',
                '<',
                '>',
                '\0',
                '\u{feff}',
                '\u{10ffff}',
                'ǅ',
            ];
            let len = self.below(max_chars + 1);
            (0..len)
                .map(|_| match self.below(4) {
                    0 => PALETTE[self.below(PALETTE.len() as u32) as usize],
                    1 => char::from_u32(self.below(0x80)).unwrap_or('a'),
                    2 => char::from_u32(self.below(0x3000)).unwrap_or('b'),
                    _ => char::from_u32(self.below(0x11_0000)).unwrap_or('c'),
                })
                .collect()
        }
    }

    #[test]
    fn arbitrary_strings_match_the_reference() {
        let mut rng = XorShift(0x6f74_6b64);
        let configs = [
            TokenizerConfig::DEFAULT,
            TokenizerConfig {
                buckets: 7,
                seed: 3,
                min_ngram: 1,
                max_ngram: 8,
                max_words: 3,
                max_features_per_word: 5,
            },
            TokenizerConfig {
                buckets: u32::MAX,
                min_ngram: 2,
                max_ngram: 2,
                max_features_per_word: 1,
                ..TokenizerConfig::DEFAULT
            },
        ];
        for i in 0..3000 {
            let text = rng.string(if i % 100 == 0 { 400 } else { 40 });
            for config in &configs {
                check::<1024>(config, &text);
                check::<7>(config, &text);
            }
        }
    }

    #[test]
    fn big_inputs_do_not_panic() {
        let d = TokenizerConfig::DEFAULT;
        let mut rng = XorShift(12345);
        // ~10 kB of random text, a 10 kB word, and 10 kB of punctuation.
        let mut text = String::new();
        while text.len() < 10_000 {
            text.push_str(&rng.string(50));
        }
        check::<4096>(&d, &text);
        check::<16>(&d, &text);
        let r = check::<4096>(&d, &"ẽ".repeat(5000));
        assert_eq!((r.words, r.long_runs, r.words_dropped), (64, 1, 624 - 64));
        assert_eq!(check::<4096>(&d, &"¡!".repeat(5000)).words, 0);
        let r = check::<4096>(&d, &"ñe'ẽ ".repeat(2000));
        assert_eq!((r.words, r.words_dropped), (64, 4000 - 64));
    }
}
