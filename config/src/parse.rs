//! The entry points: text in any input form -> validated [`Config`], or every problem.
//!
//! Must not: do I/O (callers read files).

use crate::errors::ConfigErrors;
use crate::forms::{extract, InputForm};
use crate::model::Config;
use crate::validate::validate;

/// Parses and validates a MetalLB v0.12 configuration in any supported input form.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    parse_with_form(text).map(|(_, c)| c)
}

/// Like [`parse`], also saying which input form held the configuration.
pub fn parse_with_form(text: &str) -> Result<(InputForm, Config), ConfigErrors> {
    let (form, value) = extract(text)?;
    let cfg = validate(&value, "")?;
    Ok((form, cfg))
}
