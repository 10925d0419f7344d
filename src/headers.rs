//! The headers an answer carries, named in one place: LiteLLM's `x-litellm-*` and OpenAI's
//! `x-ratelimit-*`. The pipeline fills one [`AnswerHeaders`] from what its steps decided; the
//! runtime renders it once, on success and on failure alike.

use crate::ledger::RateInfo;
use crate::money::Money;

/// What an answer tells its caller about how it was served. Every field is set by the
/// pipeline from one step's result; a field left `None` is not sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AnswerHeaders {
    pub model_group: Option<String>,
    /// The deployment that served the last attempt.
    pub model_id: Option<String>,
    pub api_base: Option<String>,
    pub response_cost: Option<Money>,
    /// The key's spend after this request, when its ledger said so in time.
    pub key_spend: Option<Money>,
    pub timing: Option<Timing>,
    pub attempts: Option<Attempts>,
    pub rate: Option<RateInfo>,
}

/// Time to the upstream's answer (or first stream bytes), and the gateway's share of it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timing {
    pub total_ms: u64,
    pub upstream_ms: u64,
}

/// How many attempts routing made beyond the first, and in other groups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    pub retries: u32,
    pub fallbacks: u32,
}

impl AnswerHeaders {
    /// The headers as name/value pairs, in a fixed order.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = Vec::with_capacity(16);
        let mut put = |name: &'static str, value: Option<String>| {
            if let Some(value) = value {
                out.push((name, value));
            }
        };
        put("x-litellm-model-group", self.model_group.clone());
        put("x-litellm-model-id", self.model_id.clone());
        put("x-litellm-model-api-base", self.api_base.clone());
        put("x-litellm-response-cost", self.response_cost.map(|m| m.to_string()));
        put("x-litellm-key-spend", self.key_spend.map(|m| m.to_string()));
        if let Some(t) = self.timing {
            put("x-litellm-response-duration-ms", Some(t.total_ms.to_string()));
            put("x-litellm-overhead-duration-ms", Some(t.total_ms.saturating_sub(t.upstream_ms).to_string()));
        }
        if let Some(a) = self.attempts {
            put("x-litellm-attempted-retries", Some(a.retries.to_string()));
            put("x-litellm-attempted-fallbacks", Some(a.fallbacks.to_string()));
        }
        if let Some(rate) = &self.rate {
            let seconds = |ms: u64| ms.div_ceil(1000).to_string();
            put("x-ratelimit-limit-requests", rate.limit_requests.map(|v| v.to_string()));
            put("x-ratelimit-remaining-requests", rate.remaining_requests.map(|v| v.to_string()));
            put("x-ratelimit-reset-requests", rate.reset_requests_ms.map(seconds));
            put("x-ratelimit-limit-tokens", rate.limit_tokens.map(|v| v.to_string()));
            put("x-ratelimit-remaining-tokens", rate.remaining_tokens.map(|v| v.to_string()));
            put("x-ratelimit-reset-tokens", rate.reset_tokens_ms.map(seconds));
        }
        out
    }
}

/// The headers a browser client may read (`access-control-expose-headers`).
pub const EXPOSED: &str = "x-litellm-call-id, x-litellm-model-id, x-litellm-model-group, x-litellm-model-api-base, \
     x-litellm-response-cost, x-litellm-key-spend, x-litellm-response-duration-ms, x-litellm-overhead-duration-ms, \
     x-litellm-attempted-retries, x-litellm-attempted-fallbacks, x-ratelimit-limit-requests, \
     x-ratelimit-remaining-requests, x-ratelimit-reset-requests, x-ratelimit-limit-tokens, \
     x-ratelimit-remaining-tokens, x-ratelimit-reset-tokens, retry-after, x-should-retry";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_a_step_decided_is_sent() {
        assert!(AnswerHeaders::default().pairs().is_empty());
        let headers = AnswerHeaders {
            model_group: Some("chat".into()),
            response_cost: Some(Money::from_pico(1_500_000)),
            timing: Some(Timing { total_ms: 12, upstream_ms: 10 }),
            attempts: Some(Attempts { retries: 1, fallbacks: 0 }),
            rate: Some(RateInfo { limit_requests: Some(10), reset_requests_ms: Some(1_001), ..RateInfo::default() }),
            ..AnswerHeaders::default()
        };
        let pairs = headers.pairs();
        let get = |name: &str| pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("x-litellm-model-group"), Some("chat"));
        assert_eq!(get("x-litellm-response-cost"), Some("0.0000015"));
        assert_eq!(get("x-litellm-overhead-duration-ms"), Some("2"));
        assert_eq!(get("x-litellm-attempted-retries"), Some("1"));
        assert_eq!(get("x-ratelimit-reset-requests"), Some("2"), "rounded up to whole seconds");
        assert_eq!(get("x-ratelimit-remaining-requests"), None);
        assert_eq!(get("x-litellm-key-spend"), None);
        for (name, _) in &pairs {
            assert!(EXPOSED.contains(name), "{name} is readable by browsers");
        }
    }
}
