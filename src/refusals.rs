//! Every refusal the gateway writes about a key, a budget or a limit, each written once, so
//! that the same condition reads the same wherever it is found.

use crate::money::Money;
use crate::openai::{ApiError, ErrorKind};
use crate::time;

/// A 429 with `retry-after` in whole seconds (at least one).
pub fn rate_limited(message: impl Into<String>, retry_after_ms: u64) -> ApiError {
    let mut error = ApiError::new(429, ErrorKind::RateLimit, message);
    error.retry_after_s = Some(retry_after_ms.div_ceil(1000).max(1));
    error
}

/// Every deployment of a group is cooling down.
pub fn no_deployments(group: &str, retry_after_ms: u64) -> ApiError {
    rate_limited(
        format!("No deployments available for selected model: every deployment of `{group}` is cooling down."),
        retry_after_ms,
    )
}

/// A key's budget cannot hold the request (LiteLLM's message and type).
pub fn budget_exceeded(committed: Money, max_budget: Money) -> ApiError {
    let message = format!("Budget has been exceeded! Current cost: {}, Max budget: {}", committed, max_budget);
    ApiError::new(400, ErrorKind::BudgetExceeded, message)
}

/// A key's budget for one model (`model_max_budget`) cannot hold the request (LiteLLM's type
/// and words: "... exceeded budget for model=...").
pub fn model_budget_exceeded(
    key_hash: &str,
    key_alias: Option<&str>,
    model: &str,
    committed: Money,
    max_budget: Money,
) -> ApiError {
    let alias = key_alias.unwrap_or("None");
    let message = format!(
        "Budget has been exceeded! Virtual key: {key_hash}, key_alias: {alias}, exceeded budget for model={model}. \
         Current cost: {committed}, Max budget: {max_budget}"
    );
    ApiError::new(400, ErrorKind::BudgetExceeded, message).with_param("model")
}

/// A team's, user's or customer's budget cannot hold the request; `party` is LiteLLM's
/// `Team=<id>` naming it.
pub fn party_budget_exceeded(party: &str, committed: Money, max_budget: Money) -> ApiError {
    let message = format!("Budget has been exceeded! {party} Current cost: {committed}, Max budget: {max_budget}");
    ApiError::new(400, ErrorKind::BudgetExceeded, message)
}

/// A team or customer that is blocked (or deleted) refuses its requests (LiteLLM's message).
pub fn party_blocked(party: &str, reason: &str, unblock_path: &str) -> ApiError {
    ApiError::unauthorized(match reason {
        "deleted" => format!("{party} was deleted; its keys and requests are refused."),
        _ => format!("{party} is blocked. Update via {unblock_path} if you're an admin."),
    })
}

/// A key's team or user does not allow the model (LiteLLM's type, with 401).
pub fn party_model_not_allowed(party: &str, model: &str, models: &[String]) -> ApiError {
    ApiError::new(
        401,
        ErrorKind::KeyModelAccessDenied,
        format!("{party} is not allowed to access model={model}. It can access models={models:?}."),
    )
    .with_param("model")
}

/// A key that is blocked, deleted or regenerated; `at` is when, if known.
pub fn key_revoked(reason: &str, at: Option<u64>) -> ApiError {
    let when = at.map(|at| format!(" at {}", time::format_rfc3339(at))).unwrap_or_default();
    ApiError::unauthorized(match reason {
        "blocked" => "This API key is blocked. An admin can unblock it with /key/unblock.".to_string(),
        "regenerated" => format!("This API key was regenerated{when}; use the new key."),
        _ => format!("This API key was deleted{when}."),
    })
}

/// A key asked for a model outside its `models` (LiteLLM's type, with 401).
pub fn model_not_allowed(models: &[String]) -> ApiError {
    ApiError::new(
        401,
        ErrorKind::KeyModelAccessDenied,
        format!("This API key is not allowed to access this model. It can access models={models:?}."),
    )
    .with_param("model")
}

/// A budget cannot hold a request the gateway cannot price.
pub fn unpriced(model: &str) -> ApiError {
    ApiError::invalid_request(
        format!(
            "The gateway has no price for model `{model}`, and a budget applies to this request (its key's, \
             team's, user's or customer's). Set \
             `model_info.input_cost_per_token` and `model_info.output_cost_per_token` for it in the config."
        ),
        "model",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_carry_the_status_type_and_wait_clients_act_on() {
        let e = rate_limited("slow down", 1_001);
        assert_eq!((e.status, e.kind.as_str(), e.retry_after_s), (429, "rate_limit_exceeded", Some(2)));
        assert_eq!(rate_limited("x", 0).retry_after_s, Some(1), "never retry-after: 0");
        let e = budget_exceeded(Money::from_pico(100_000_000_000), Money::from_pico(100_000_000_000));
        assert_eq!((e.status, e.kind.as_str()), (400, "budget_exceeded"));
        assert_eq!(e.message, "Budget has been exceeded! Current cost: 0.1, Max budget: 0.1");
        assert!(key_revoked("regenerated", Some(0)).message.contains("regenerated at 1970-01-01T00:00:00"));
        assert_eq!(key_revoked("regenerated", None).message, "This API key was regenerated; use the new key.");
        assert_eq!(key_revoked("deleted", None).status, 401);
        let e = model_budget_exceeded(
            "ab12",
            Some("team-a"),
            "gpt",
            Money::from_pico(50_000_000_000),
            Money::from_pico(50_000_000_000),
        );
        assert_eq!((e.status, e.kind.as_str(), e.param.as_deref()), (400, "budget_exceeded", Some("model")));
        assert_eq!(
            e.message,
            "Budget has been exceeded! Virtual key: ab12, key_alias: team-a, exceeded budget for model=gpt. Current cost: 0.05, Max budget: 0.05"
        );
        let e = party_budget_exceeded("Team=t1", Money::from_pico(50_000_000_000), Money::from_pico(50_000_000_000));
        assert_eq!(e.message, "Budget has been exceeded! Team=t1 Current cost: 0.05, Max budget: 0.05");
        let e = party_blocked("Team=t1", "blocked", "/team/unblock");
        assert_eq!(
            (e.status, e.message.as_str()),
            (401, "Team=t1 is blocked. Update via /team/unblock if you're an admin.")
        );
        let e = model_not_allowed(&["a".into()]);
        assert_eq!((e.status, e.kind.as_str(), e.param.as_deref()), (401, "key_model_access_denied", Some("model")));
    }
}
