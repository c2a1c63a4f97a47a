//! Problems found while reading a configuration or Service manifests: every one carries the field
//! path it concerns, the offending value (when there is one) and why it is wrong. Warnings have the
//! same shape but do not stop the configuration being read.
//!
//! Must not: stop at the first problem. Collectors gather all of them; callers decide how to show them.

use std::fmt;

use serde::Serialize;

/// One problem, e.g. `address-pools[1].addresses[0] = "192.0.2.0/33": invalid prefix length`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ConfigError {
    /// Field path from the configuration root (`peers[0].hold-time`); `<input>` for the whole text.
    pub path: String,
    /// The offending value as written, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Why it is wrong.
    pub reason: String,
    /// 1-based line of a YAML syntax error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// 1-based column of a YAML syntax error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, value: Option<String>, reason: impl Into<String>) -> Self {
        ConfigError {
            path: path.into(),
            value,
            reason: reason.into(),
            line: None,
            column: None,
        }
    }

    /// A YAML syntax error (with its position when the YAML library knows it).
    pub fn syntax(path: impl Into<String>, err: &serde_yaml::Error) -> Self {
        let loc = err.location();
        let mut reason = err.to_string();
        // serde_yaml appends " at line L column C"; we show the position separately.
        if let Some(idx) = reason.find(" at line ") {
            reason.truncate(idx);
        }
        ConfigError {
            path: path.into(),
            value: None,
            reason: format!("YAML syntax error: {reason}"),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(v) = &self.value {
            write!(f, " = {v:?}")?;
        }
        write!(f, ": {}", self.reason)?;
        if let (Some(l), Some(c)) = (self.line, self.column) {
            write!(f, " (line {l}, column {c})")?;
        }
        Ok(())
    }
}

/// Something the user should hear that does not stop the configuration being read, e.g. a
/// Konvoy `metallb` addon with `enabled: false`. Shown like a [`ConfigError`], field path first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct ConfigWarning {
    /// Field path in the input (`spec.addons.addonsList[0].enabled`).
    pub path: String,
    /// The value as written, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// What it means for the user.
    pub reason: String,
}

impl ConfigWarning {
    pub fn new(path: impl Into<String>, value: Option<String>, reason: impl Into<String>) -> Self {
        ConfigWarning {
            path: path.into(),
            value,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)?;
        if let Some(v) = &self.value {
            write!(f, " = {v:?}")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Every problem found, in the order found (which follows the input). Never empty when returned
/// as an error.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn one(err: ConfigError) -> Self {
        ConfigErrors(vec![err])
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

/// One problem per line, field path first.
impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects problems while a walk goes on.
#[derive(Debug, Default)]
pub struct Problems(Vec<ConfigError>);

impl Problems {
    pub fn push(&mut self, path: &str, value: Option<String>, reason: impl Into<String>) {
        self.0.push(ConfigError::new(path, value, reason));
    }
    /// Adds every problem of `errors` (e.g. from a nested document).
    pub fn extend(&mut self, errors: ConfigErrors) {
        self.0.extend(errors.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// How many problems so far (compare before and after a sub-walk).
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn into_result<T>(self, ok: T) -> Result<T, ConfigErrors> {
        if self.0.is_empty() {
            Ok(ok)
        } else {
            Err(ConfigErrors(self.0))
        }
    }
}
