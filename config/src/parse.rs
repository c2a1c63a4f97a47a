//! The entry points: text in any input form -> validated [`Config`], or every problem.
//!
//! Must not: do I/O (callers read files).

use crate::errors::{ConfigErrors, ConfigWarning};
use crate::forms::{extract_with_warnings, InputForm};
use crate::model::Config;
use crate::validate::validate;

/// A configuration read and validated, where it was found, and the warnings about the input
/// (e.g. a Konvoy `metallb` addon with `enabled: false`), which callers show to the user.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub form: InputForm,
    pub config: Config,
    pub warnings: Vec<ConfigWarning>,
}

/// Parses and validates a MetalLB v0.12 configuration in any supported input form.
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
    let config = validate(&found.value, "")?;
    Ok(Parsed {
        form: found.form,
        config,
        warnings: found.warnings,
    })
}
