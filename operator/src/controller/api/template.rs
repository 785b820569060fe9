//! The template variables of an analysis `query`: `{{ namespace }}`, `{{ name }}`,
//! `{{ service }}`, `{{ interval }}`, `{{ canaryPods }}`, `{{ stablePods }}`.
//!
//! Hand-written rather than a template engine: six plain substitutions, no logic, and an unknown
//! variable must be refused when the spec is validated — an engine (tera, minijinja) would accept
//! filters, loops and lookups that the API does not promise.

use std::collections::BTreeSet;

/// Every variable a query may use.
pub const VARIABLES: [&str; 6] = [
    "namespace",
    "name",
    "service",
    "interval",
    "canaryPods",
    "stablePods",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown template variable {{{{ {0} }}}} (known: namespace, name, service, interval, canaryPods, stablePods)"
    )]
    Unknown(String),
    #[error("a {{{{ is not closed by }}}}")]
    Unclosed,
}

/// The variables `query` uses, or the first problem.
pub fn variables(query: &str) -> Result<BTreeSet<&'static str>, TemplateError> {
    let mut used = BTreeSet::new();
    render(query, |name| {
        used.insert(name);
        String::new()
    })?;
    Ok(used)
}

/// `query` with every variable replaced by `value(name)`.
pub fn render(query: &str, mut value: impl FnMut(&'static str) -> String) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(query.len());
    let mut rest = query;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or(TemplateError::Unclosed)?;
        out.push_str(&value(known(after[..end].trim())?));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

fn known(name: &str) -> Result<&'static str, TemplateError> {
    VARIABLES
        .iter()
        .find(|v| **v == name)
        .copied()
        .ok_or_else(|| TemplateError::Unknown(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_variable_with_or_without_spaces() {
        let q = r#"sum(rate(x{namespace="{{ namespace }}",pod=~"{{canaryPods}}"}[{{ interval }}])) / {{ name }}-{{service}}-{{ stablePods }}"#;
        let out = render(q, |v| format!("<{v}>")).unwrap();
        assert_eq!(
            out,
            r#"sum(rate(x{namespace="<namespace>",pod=~"<canaryPods>"}[<interval>])) / <name>-<service>-<stablePods>"#
        );
        assert_eq!(
            variables(q).unwrap(),
            BTreeSet::from([
                "namespace",
                "canaryPods",
                "interval",
                "name",
                "service",
                "stablePods"
            ])
        );
    }

    #[test]
    fn refuses_unknown_and_unclosed_variables() {
        assert_eq!(
            variables("x{pod=~\"{{ canaryPod }}\"}"),
            Err(TemplateError::Unknown("canaryPod".into()))
        );
        assert_eq!(variables("x[{{ interval ]"), Err(TemplateError::Unclosed));
        assert_eq!(
            TemplateError::Unknown("pods".into()).to_string(),
            "unknown template variable {{ pods }} (known: namespace, name, service, interval, canaryPods, stablePods)"
        );
        assert_eq!(variables("up").unwrap(), BTreeSet::new());
    }
}
