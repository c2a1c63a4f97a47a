//! The entry points: text in any input form -> validated [`Config`], or every problem.
//!
//! Must not: do I/O (callers read files).

use crate::errors::{ConfigErrors, ConfigWarning};
use crate::forms::{extract_with_warnings, read, InputForm};
use crate::model::Config;

/// A configuration read and validated, where it was found, and the warnings about the input
/// (e.g. a Konvoy `metallb` addon with `enabled: false`), which callers show to the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub form: InputForm,
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
}

/// Parses and validates a MetalLB configuration in any supported input form: the v0.12 format
/// (raw, ConfigMap, Helm values, Konvoy cluster.yaml) or MetalLB's custom resources.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_with_warnings(text).map(|p| p.config)
}

/// Like [`parse`], also saying which input form held the configuration.
pub fn parse_with_form(text: &str) -> Result<(InputForm, Config), ConfigErrors> {
    parse_with_warnings(text).map(|p| (p.form, p.config))
}

/// Like [`parse_with_form`], also returning the warnings about the input.
pub fn parse_with_warnings(text: &str) -> Result<Parsed, ConfigErrors> {
    let found = extract_with_warnings(text)?;
    let (config, warnings) = read(&found)?;
    Ok(Parsed {
        form: found.form,
        config,
        warnings,
    })
}
