//! Kubernetes label syntax (qualified names and label values), as `metav1.LabelSelectorAsSelector`
//! checks it for `node-selectors`.
//!
//! Must not: evaluate selectors (the model does).

/// Why `key` is not a valid label key (`[prefix/]name`), or `None` when it is.
pub fn key_problem(key: &str) -> Option<String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if p.is_empty() || p.len() > 253 || !is_dns_subdomain(p) {
            return Some(format!(
                "label key prefix {p:?} must be a DNS subdomain (lowercase letters, digits, '-', '.')"
            ));
        }
    }
    if name.is_empty() {
        return Some("label key name must not be empty".to_string());
    }
    value_problem(name).map(|_| {
        "label key name must be at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit".to_string()
    })
}

/// Why `v` is not a valid label value, or `None` when it is (the empty value is valid).
pub fn value_problem(v: &str) -> Option<String> {
    if v.is_empty() {
        return None;
    }
    let ok_chars = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    let ok_ends = v.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && v.as_bytes().last().is_some_and(u8::is_ascii_alphanumeric);
    if v.len() > 63 || !ok_chars || !ok_ends {
        Some("label value must be at most 63 characters: letters, digits, '-', '_', '.', starting and ending with a letter or digit".to_string())
    } else {
        None
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    s.split('.').all(|part| {
        !part.is_empty()
            && part.len() <= 63
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values() {
        assert!(key_problem("kubernetes.io/hostname").is_none());
        assert!(key_problem("rack").is_none());
        assert!(key_problem("Bad_Prefix/x").is_some());
        assert!(key_problem("a/").is_some());
        assert!(key_problem("-x").is_some());
        assert!(value_problem("").is_none());
        assert!(value_problem("amd64").is_none());
        assert!(value_problem("a b").is_some());
        assert!(value_problem(&"x".repeat(64)).is_some());
    }
}
