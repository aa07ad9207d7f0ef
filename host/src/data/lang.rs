//! Language tags: free-form (BCP-47-like, any script), with names and resource classes for the
//! eight Multi30k languages, and `+`-joined tags for a multilingual student (`ay+gn+qu`).

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest accepted tag, per part (BCP-47's longest registered forms stay under this).
pub const MAX_TAG_CHARS: usize = 35;

/// A language tag: one language (`ay`, `quy`, `zh-Hant`) or several joined by `+` (a multilingual
/// student, `ay+gn`). Copy and cheap: tags are interned for the life of the process (a run meets
/// a handful).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lang(&'static str);

/// What the eight Multi30k languages are (README table): code, English name, resource class,
/// machine-translated.
const MULTI30K: [(&str, &str, &str, bool); 8] = [
    ("en", "English", "pivot", false),
    ("de", "German", "high-resource", false),
    ("fr", "French", "high-resource", false),
    ("es", "Spanish", "high-resource", true),
    ("cs", "Czech", "medium-resource", false),
    ("ay", "Aymara", "low-resource", true),
    ("gn", "Guarani", "low-resource", true),
    ("qu", "Quechua", "low-resource", true),
];

impl Lang {
    /// English, the teacher's language.
    pub const EN: Lang = Lang("en");
    /// German (Multi30k, human translation).
    pub const DE: Lang = Lang("de");
    /// French (Multi30k, human translation).
    pub const FR: Lang = Lang("fr");
    /// Spanish (Multi30k, machine translation).
    pub const ES: Lang = Lang("es");
    /// Czech (Multi30k, human translation).
    pub const CS: Lang = Lang("cs");
    /// Aymara (Multi30k, machine translation).
    pub const AY: Lang = Lang("ay");
    /// Guarani (Multi30k, machine translation).
    pub const GN: Lang = Lang("gn");
    /// Quechua (Multi30k, machine translation).
    pub const QU: Lang = Lang("qu");

    /// The Multi30k languages, English (the pivot) first, in README order.
    pub const MULTI30K: [Lang; 8] =
        [Lang::EN, Lang::DE, Lang::FR, Lang::ES, Lang::CS, Lang::AY, Lang::GN, Lang::QU];

    /// Parses and interns a tag. A Multi30k code or English name matches case-insensitively
    /// (`"Aymara"` is `ay`); any other tag is kept as written. Each `+`-separated part must be 1 to
    /// [`MAX_TAG_CHARS`] letters or digits of any script, `-` or `_`, not starting with `-`.
    ///
    /// ```
    /// use otkd::data::Lang;
    /// assert_eq!(Lang::new("Aymara").unwrap(), Lang::AY);
    /// assert_eq!(Lang::new("quy").unwrap().code(), "quy");
    /// assert_eq!(Lang::new("ay+gn").unwrap().parts().count(), 2);
    /// assert!(Lang::new("a b").is_err());
    /// ```
    pub fn new(tag: &str) -> Result<Lang, ParseLangError> {
        let tag = tag.trim();
        let mut parts = Vec::new();
        for part in tag.split('+') {
            let valid = !part.is_empty()
                && part.chars().count() <= MAX_TAG_CHARS
                && !part.starts_with('-')
                && part.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(ParseLangError(format!(
                    "invalid language tag {tag:?}: use letters or digits of any script, '-' or '_' (at most {MAX_TAG_CHARS}), e.g. quy, zh-Hant; join several with '+'"
                )));
            }
            let known = MULTI30K
                .iter()
                .find(|(code, name, ..)| part.eq_ignore_ascii_case(code) || part.eq_ignore_ascii_case(name));
            let part = known.map_or(part, |(code, ..)| code);
            if parts.contains(&part) {
                return Err(ParseLangError(format!("language tag {tag:?} names {part} twice")));
            }
            parts.push(part);
        }
        Ok(Lang(intern(&parts.join("+"))))
    }

    /// Joins several languages into the tag of one multilingual student (`ay+gn`); one language
    /// is itself.
    pub fn joined(langs: &[Lang]) -> Result<Lang, ParseLangError> {
        Lang::new(&langs.iter().map(|l| l.code()).collect::<Vec<_>>().join("+"))
    }

    /// The tag as written in file names and reports (`"ay"`, `"quy"`, `"ay+gn"`).
    pub fn code(self) -> &'static str {
        self.0
    }

    /// The languages of a joined tag, in order; a single language yields itself.
    pub fn parts(self) -> impl Iterator<Item = Lang> {
        self.0.split('+').map(|p| Lang(intern(p)))
    }

    /// Whether the tag joins several languages.
    pub fn is_multilingual(self) -> bool {
        self.0.contains('+')
    }

    /// Whether `other` (a single language) is one of this tag's languages.
    pub fn includes(self, other: Lang) -> bool {
        self.parts().any(|p| p == other)
    }

    fn multi30k(self) -> Option<&'static (&'static str, &'static str, &'static str, bool)> {
        MULTI30K.iter().find(|(code, ..)| *code == self.0)
    }

    /// English name of a Multi30k language (`"Aymara"`); any other tag is its own name.
    pub fn name(self) -> &'static str {
        self.multi30k().map_or(self.0, |(_, name, ..)| name)
    }

    /// Resource class of a Multi30k language: `"pivot"` (en), `"high-resource"` (de, fr, es),
    /// `"medium-resource"` (cs), `"low-resource"` (ay, gn, qu); `"multilingual"` for a joined
    /// tag and `"user"` for any other.
    pub fn resource(self) -> &'static str {
        if self.is_multilingual() {
            return "multilingual";
        }
        self.multi30k().map_or("user", |(_, _, resource, _)| resource)
    }

    /// True for the NLLB-200 machine translations of Multi30k (es, ay, gn, qu): treat their
    /// numbers as synthetic.
    pub fn machine_translated(self) -> bool {
        self.multi30k().is_some_and(|(.., mt)| *mt)
    }

    /// Position in [`Lang::MULTI30K`], after them for any other tag.
    fn rank(self) -> usize {
        MULTI30K.iter().position(|(code, ..)| *code == self.0).unwrap_or(MULTI30K.len())
    }
}

/// Interns `tag`: one leaked copy per distinct tag for the life of the process.
fn intern(tag: &str) -> &'static str {
    if let Some((code, ..)) = MULTI30K.iter().find(|(code, ..)| *code == tag) {
        return code;
    }
    static TAGS: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);
    let mut tags = TAGS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let tags = tags.get_or_insert_with(HashSet::new);
    if let Some(&known) = tags.get(tag) {
        return known;
    }
    let leaked: &'static str = Box::leak(tag.to_string().into_boxed_str());
    tags.insert(leaked);
    leaked
}

/// Multi30k languages in README order, then any other tag alphabetically.
impl Ord for Lang {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.rank(), self.0).cmp(&(other.rank(), other.0))
    }
}

impl PartialOrd for Lang {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl fmt::Debug for Lang {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Error of [`Lang::new`]; the message says what a tag may hold.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseLangError(String);

impl FromStr for Lang {
    type Err = ParseLangError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Lang::new(s)
    }
}

impl Serialize for Lang {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for Lang {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let tag = String::deserialize(deserializer)?;
        Lang::new(&tag).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi30k_codes_and_names_map_to_the_same_tag() {
        assert_eq!(Lang::new("AY").unwrap(), Lang::AY);
        assert_eq!(Lang::new(" guarani ").unwrap(), Lang::GN);
        assert_eq!(Lang::AY.name(), "Aymara");
        assert_eq!(Lang::CS.resource(), "medium-resource");
        assert!(Lang::QU.machine_translated() && !Lang::DE.machine_translated());
    }

    #[test]
    fn free_form_tags_in_any_script_are_kept_as_written() {
        for tag in ["quy", "zh-Hant", "aym_news", "ᐃᓄᒃᑎᑐᑦ", "日本語"] {
            let lang = Lang::new(tag).unwrap();
            assert_eq!(lang.code(), tag);
            assert_eq!(lang.name(), tag);
            assert_eq!(lang.resource(), "user");
            assert_eq!(Lang::new(tag).unwrap(), lang, "interned once");
        }
    }

    #[test]
    fn bad_tags_are_refused_with_the_rule() {
        for tag in ["", "a b", "-x", "a\tb", "ay+", "x/y", &"a".repeat(MAX_TAG_CHARS + 1)] {
            let err = Lang::new(tag).unwrap_err().to_string();
            assert!(err.contains("invalid language tag"), "{tag:?}: {err}");
        }
        assert!(Lang::new("ay+Aymara").unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn joined_tags_split_back_and_order_keeps_readme_order() {
        let joined = Lang::joined(&[Lang::AY, Lang::new("quy").unwrap()]).unwrap();
        assert_eq!(joined.code(), "ay+quy");
        assert!(joined.is_multilingual() && joined.includes(Lang::AY) && !joined.includes(Lang::GN));
        assert_eq!(joined.resource(), "multilingual");
        let mut langs = [Lang::QU, Lang::new("abc").unwrap(), Lang::EN, Lang::CS];
        langs.sort();
        assert_eq!(langs.iter().map(|l| l.code()).collect::<Vec<_>>(), ["en", "cs", "qu", "abc"]);
        let json = serde_json::to_string(&joined).unwrap();
        assert_eq!(serde_json::from_str::<Lang>(&json).unwrap(), joined);
        assert!(serde_json::from_str::<Lang>("\"a b\"").is_err());
    }
}
