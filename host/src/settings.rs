//! App settings, as Azure Functions has them: read by name from a settings
//! file (`--settings FILE`, TOML) or else the host's environment. Secret
//! settings are redacted from everything the host writes or shows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Environment variables the host itself uses are never app settings.
const HOST_PREFIX: &str = "DURANGO_";
/// Lists environment-provided settings that are secret (comma-separated).
pub const SECRET_NAMES_VAR: &str = "DURANGO_SECRET_SETTINGS";
const REDACTED: &str = "***";

/// Secrets shorter than this are not looked for in base64: their encoding
/// keeps 6 characters or fewer of its own (see `base64_cores`), which
/// ordinary text and other base64 contain by chance.
const MIN_BASE64_SECRET: usize = 6;

/// Text to look for: per character, every way it may be written.
type Pattern = Vec<Vec<String>>;

#[derive(Debug, Default, Clone)]
pub struct Settings {
    values: BTreeMap<String, String>,
    secrets: BTreeSet<String>,
    /// Values never to show: secret settings' values and the system key.
    hidden: BTreeSet<String>,
    /// What finds them in text, in every form they travel in.
    patterns: Vec<Pattern>,
    /// By first byte, the patterns a match beginning with it may be of.
    by_first_byte: Vec<Vec<usize>>,
}

impl Settings {
    /// Settings from `file` (if any) over the process environment.
    ///
    /// ```toml
    /// SmsChallengeTimeoutSeconds = 90
    /// TwilioAccountSid = "AC..."
    /// [secrets]
    /// TwilioAuthToken = "..."
    /// ```
    pub fn load(file: Option<&Path>) -> anyhow::Result<Settings> {
        let mut settings = Settings::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                anyhow::anyhow!("cannot read settings file {}: {e}", path.display())
            })?;
            settings
                .add_toml(&text)
                .map_err(|e| anyhow::anyhow!("settings file {} is invalid: {e}", path.display()))?;
        }
        if let Ok(names) = std::env::var(SECRET_NAMES_VAR) {
            settings.secrets.extend(
                names
                    .split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .map(String::from),
            );
        }
        settings.refresh_hidden();
        Ok(settings)
    }

    fn add_toml(&mut self, text: &str) -> Result<(), String> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| e.message().to_string())?;
        for (name, value) in table {
            match (name.as_str(), value) {
                ("secrets", toml::Value::Table(secrets)) => {
                    for (name, value) in secrets {
                        self.values.insert(name.clone(), plain(&name, value)?);
                        self.secrets.insert(name);
                    }
                }
                (_, value) => {
                    let value = plain(&name, value)?;
                    self.values.insert(name, value);
                }
            }
        }
        Ok(())
    }

    fn refresh_hidden(&mut self) {
        let values: Vec<String> = self
            .secrets
            .iter()
            .filter_map(|name| self.get(name))
            .chain(std::env::var("DURANGO_KEY").ok())
            .collect();
        for value in values {
            self.hide(&value);
        }
    }

    /// Never show `value` (a secret, the system key).
    pub fn hide(&mut self, value: &str) {
        if value.is_empty() || !self.hidden.insert(value.to_string()) {
            return;
        }
        self.by_first_byte.resize(256, Vec::new());
        for text in std::iter::once(value.to_string()).chain(base64_cores(value)) {
            let pattern: Pattern = text.chars().map(spellings).collect();
            for spelling in &pattern[0] {
                let patterns = &mut self.by_first_byte[usize::from(spelling.as_bytes()[0])];
                // Once per byte (`\"` and `\u0022` begin alike).
                if patterns.last() != Some(&self.patterns.len()) {
                    patterns.push(self.patterns.len());
                }
            }
            self.patterns.push(pattern);
        }
    }

    pub fn get(&self, name: &str) -> Option<String> {
        if name.starts_with(HOST_PREFIX) {
            return None;
        }
        self.values
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }

    pub fn is_secret(&self, name: &str) -> bool {
        self.secrets.contains(name)
    }

    /// `text` with every secret value replaced by `***`, in every form it
    /// travels in: as itself, escaped in a JSON string, percent-encoded (a
    /// URL, a form), or in base64 (a `Basic` header of `user:secret`).
    pub fn redact(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut redacted = String::with_capacity(text.len());
        let (mut kept, mut at) = (0, 0);
        while at < bytes.len() {
            // Every spelling is of whole characters, so a match begins and
            // ends on character boundaries: `text` may be sliced there.
            let found = self
                .by_first_byte
                .get(usize::from(bytes[at]))
                .into_iter()
                .flatten()
                .filter_map(|&pattern| longest_match(&self.patterns[pattern], &bytes[at..]))
                .max();
            match found {
                Some(len) => {
                    redacted.push_str(&text[kept..at]);
                    redacted.push_str(REDACTED);
                    at += len;
                    kept = at;
                }
                None => at += 1,
            }
        }
        redacted.push_str(&text[kept..]);
        redacted
    }
}

/// The length of the longest match of `pattern` at the start of `text`.
/// The longest, so that a secret ending in `\\` takes its JSON escape whole
/// and leaves the string's closing quote alone.
fn longest_match(pattern: &Pattern, text: &[u8]) -> Option<usize> {
    // Most tries fail at the first character: settle those without
    // allocating.
    if !pattern[0].iter().any(|s| text.starts_with(s.as_bytes())) {
        return None;
    }
    // Every way of spelling the characters so far, by where it ends.
    let mut ends = vec![0];
    for spellings in pattern {
        let mut next: Vec<usize> = ends
            .iter()
            .flat_map(|&end| {
                spellings
                    .iter()
                    .filter(move |s| text[end..].starts_with(s.as_bytes()))
                    .map(move |s| end + s.len())
            })
            .collect();
        if next.is_empty() {
            return None;
        }
        next.sort_unstable();
        next.dedup();
        ends = next;
    }
    ends.last().copied()
}

/// Every way `c` may be written: itself; escaped in a JSON string (as
/// serde_json does, as `\/`, or as `\u` escapes); percent-encoded as its
/// UTF-8 bytes (URLs, forms; `+` for a space). Hex digits in either case.
fn spellings(c: char) -> Vec<String> {
    let short = match c {
        '"' => "\\\"",
        '\\' => "\\\\",
        '/' => "\\/",
        '\n' => "\\n",
        '\r' => "\\r",
        '\t' => "\\t",
        '\u{8}' => "\\b",
        '\u{c}' => "\\f",
        ' ' => "+",
        _ => "",
    };
    let mut all = vec![c.to_string(), short.to_string()];
    for upper in [false, true] {
        let hex = |n: u32, width: usize| match upper {
            true => format!("{n:0width$X}"),
            false => format!("{n:0width$x}"),
        };
        let (mut utf16, mut utf8) = ([0; 2], [0; 4]);
        let units = c.encode_utf16(&mut utf16).iter();
        all.push(units.map(|&u| format!("\\u{}", hex(u.into(), 4))).collect());
        let bytes = c.encode_utf8(&mut utf8).bytes();
        all.push(bytes.map(|b| format!("%{}", hex(b.into(), 2))).collect());
    }
    all.retain(|spelling| !spelling.is_empty());
    all.sort_unstable();
    all.dedup();
    all
}

/// What stays the same of `secret`'s base64 wherever it sits in what was
/// encoded (`sid:secret` in a Basic header, say). Base64 turns each 3 bytes
/// into 4 characters, so the secret is encoded one of three ways, by its
/// offset modulo 3. Of each, only the characters made of the secret's bits
/// alone can be looked for: the one or two at either end that share bits
/// with its unknown neighbours stay visible (a few bits of the secret).
/// Both alphabets: standard and URL-safe.
fn base64_cores(secret: &str) -> Vec<String> {
    use base64::Engine as _;
    let len = secret.len();
    if len < MIN_BASE64_SECRET {
        return Vec::new();
    }
    let mut cores = Vec::new();
    for offset in 0..3 {
        let mut bytes = vec![0; offset];
        bytes.extend_from_slice(secret.as_bytes());
        let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
        // Character j holds bits 6j to 6j+5: bytes 6j/8 to (6j+5)/8.
        let core: String = encoded
            .chars()
            .enumerate()
            .filter(|&(j, _)| 6 * j / 8 >= offset && (6 * j + 5) / 8 < offset + len)
            .map(|(_, c)| c)
            .collect();
        cores.push(core.replace('+', "-").replace('/', "_"));
        cores.push(core);
    }
    cores
}

fn plain(name: &str, value: toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        _ => Err(format!(
            "setting {name} must be a string, number or boolean"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_settings_and_secrets() {
        let mut s = Settings::default();
        s.add_toml("Timeout = 5\nName = \"x\"\n[secrets]\nToken = \"hunter22\"\n")
            .unwrap();
        s.refresh_hidden();
        assert_eq!(s.get("Timeout").as_deref(), Some("5"));
        assert!(s.is_secret("Token"));
        assert!(!s.is_secret("Name"));
        assert_eq!(s.redact("auth hunter22 failed"), "auth *** failed");
    }

    /// A secret with every character that escaping or encoding changes.
    const SPECIAL: &str = "p\"a\\ss w+rd/é:&=?%";

    fn hiding(secret: &str) -> Settings {
        let mut s = Settings::default();
        s.hide(secret);
        s
    }

    #[test]
    fn a_secret_is_redacted_json_escaped() {
        let s = hiding(SPECIAL);
        let quoted = serde_json::to_string(SPECIAL).unwrap();
        assert_eq!(s.redact(&format!("{{\"t\":{quoted}}}")), r#"{"t":"***"}"#);
        // As other encoders escape it: `\/`, `\u` for quotes and non-ASCII.
        let other = r#"{"t":"p\u0022a\u005css w+rd\/\u00E9:&=?%"}"#;
        assert_eq!(s.redact(other), r#"{"t":"***"}"#);
        // A secret that ends in a backslash takes its escape whole: the
        // string's closing quote stays, and the JSON stays JSON.
        let s = hiding("tail\\");
        let redacted = s.redact(r#"{"t":"tail\\"}"#);
        assert_eq!(redacted, r#"{"t":"***"}"#);
    }

    #[test]
    fn a_secret_is_redacted_percent_encoded() {
        use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
        let s = hiding(SPECIAL);
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", SPECIAL)
            .finish();
        assert!(form.contains('+'), "a space is a + in a form: {form}");
        assert_eq!(s.redact(&form), "token=***");
        let path = utf8_percent_encode(SPECIAL, NON_ALPHANUMERIC).to_string();
        assert!(path.contains("%20") && path.contains("%C3%A9"), "{path}");
        assert_eq!(s.redact(&format!("/x/{path}?a=1")), "/x/***?a=1");
        let lower = path.to_lowercase();
        assert_eq!(s.redact(&format!("/x/{lower}")), "/x/***");
    }

    #[test]
    fn a_secret_is_redacted_in_base64_at_any_offset() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        use base64::Engine as _;
        let s = hiding(SPECIAL);
        // `sid:` puts the secret at offsets 4, 5 and 6: 1, 2 and 0 modulo 3.
        for sid in ["AC1", "AC12", "AC123"] {
            let encoded = STANDARD.encode(format!("{sid}:{SPECIAL}"));
            let redacted = s.redact(&format!("Basic {encoded}"));
            let (before, after) = redacted.split_once("***").expect(&redacted);
            // Left: the characters of `sid:` alone, one that shares bits
            // with the secret, and at the end one more and the padding.
            let sid_chars = (4 * (sid.len() + 1)).div_ceil(3);
            assert_eq!(before, format!("Basic {}", &encoded[..sid_chars]));
            assert!(after.len() <= 3, "{redacted}");
            let url_safe = URL_SAFE.encode(format!("{sid}:{SPECIAL}"));
            assert!(s.redact(&url_safe).contains("***"), "{url_safe}");
        }
        let alone = STANDARD.encode(SPECIAL);
        assert!(s.redact(&alone).starts_with("***"), "{alone}");
    }

    #[test]
    fn short_secrets_are_not_looked_for_in_base64() {
        use base64::Engine as _;
        let s = hiding("abc12");
        let encoded = base64::engine::general_purpose::STANDARD.encode("abc12");
        assert_eq!(s.redact(&encoded), encoded);
        assert_eq!(s.redact("é abc12 é"), "é *** é");
    }

    #[test]
    fn host_variables_are_not_settings() {
        let s = Settings::default();
        assert_eq!(s.get("DURANGO_KEY"), None);
    }

    #[test]
    fn nested_tables_other_than_secrets_are_rejected() {
        let mut s = Settings::default();
        assert!(s.add_toml("[other]\nA = 1\n").is_err());
    }
}
