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

#[derive(Debug, Default, Clone)]
pub struct Settings {
    values: BTreeMap<String, String>,
    secrets: BTreeSet<String>,
    /// Values never to show: secret settings' values and the system key.
    hidden: Vec<String>,
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

    /// Never show `value` (a secret, the system key). Longest first, so a
    /// secret that contains another is hidden whole.
    pub fn hide(&mut self, value: &str) {
        if !value.is_empty() && !self.hidden.iter().any(|v| v == value) {
            self.hidden.push(value.to_string());
            self.hidden.sort_by_key(|v| std::cmp::Reverse(v.len()));
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

    /// `text` with every secret value replaced by `***`.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_string();
        for value in &self.hidden {
            if text.contains(value.as_str()) {
                text = text.replace(value.as_str(), REDACTED);
            }
        }
        text
    }
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
