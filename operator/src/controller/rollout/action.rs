//! What people ask of a rollout through the `splitscope.dev/rollout-action` annotation (set by
//! `splitscope rollout promote|abort|retry`, or by `kubectl annotate`).

use std::fmt;

/// One requested action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave the current pause step.
    Promote,
    /// Skip every remaining step: the canary gets its final weight, the rollout succeeds.
    PromoteFull,
    /// Stop: the canary gets 0, phase Aborted.
    Abort,
    /// Start a Failed or Aborted rollout again from its first step.
    Retry,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Promote => "promote",
            Action::PromoteFull => "promote-full",
            Action::Abort => "abort",
            Action::Retry => "retry",
        }
    }

    /// The annotation value for this action, made unique by `nonce` so that the same action
    /// asked twice is two requests.
    pub fn annotation_value(self, nonce: &str) -> String {
        format!("{}@{nonce}", self.as_str())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The annotation's value names no action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown rollout action {0:?} (expected promote, promote-full, abort or retry, optionally followed by @<anything unique>)"
)]
pub struct UnknownAction(pub String);

/// Parses `<action>[@<anything>]`.
pub fn parse(value: &str) -> Result<Action, UnknownAction> {
    let action = value.split_once('@').map_or(value, |(a, _)| a).trim();
    match action {
        "promote" => Ok(Action::Promote),
        "promote-full" => Ok(Action::PromoteFull),
        "abort" => Ok(Action::Abort),
        "retry" => Ok(Action::Retry),
        _ => Err(UnknownAction(value.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_actions_with_and_without_a_nonce() {
        assert_eq!(parse("promote"), Ok(Action::Promote));
        assert_eq!(parse("promote@2026-12-01T10:00:00Z"), Ok(Action::Promote));
        assert_eq!(parse("promote-full@x"), Ok(Action::PromoteFull));
        assert_eq!(parse("abort@1"), Ok(Action::Abort));
        assert_eq!(parse("retry"), Ok(Action::Retry));
        assert_eq!(parse("rollback"), Err(UnknownAction("rollback".into())));
        assert_eq!(parse(""), Err(UnknownAction(String::new())));
        for a in [Action::Promote, Action::PromoteFull, Action::Abort, Action::Retry] {
            assert_eq!(parse(&a.annotation_value("n1")), Ok(a));
        }
    }
}
