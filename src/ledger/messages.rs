//! What the worker and a ledger Durable Object say to each other (JSON over the object's
//! `fetch`), and the spend log row a ledger keeps per request. One ledger per virtual key
//! (`key:<key_id>`), one per rate-limited deployment (`deployment:<id>`), and one per team,
//! internal user and customer (`team:<id>`, `user:<id>`, `customer:<id>`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Limits, Settlement};
use crate::money::Money;

pub fn key_ledger(key_id: &str) -> String {
    format!("key:{key_id}")
}

/// A team's, internal user's or customer's ledger (`prefix`: `team`, `user`, `customer`).
pub fn party_ledger(prefix: &str, id: &str) -> String {
    format!("{prefix}:{id}")
}

/// Gives back a reservation another party refused: as if the request had never been admitted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    pub id: String,
    pub limits: Limits,
}

pub fn deployment_ledger(deployment_id: &str) -> String {
    format!("deployment:{deployment_id}")
}

/// One request, as `/spend/logs` shows it. Money in pico-dollars, times in Unix ms.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendLogRow {
    /// The answer's id (`chatcmpl_...`), or the call id when there was no answer.
    pub request_id: String,
    pub call_id: String,
    /// SHA-256 of the key (empty for the master key).
    pub api_key: String,
    pub key_alias: Option<String>,
    pub model_group: String,
    pub deployment: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens read from or written to the prompt cache (part of `prompt_tokens`).
    #[serde(default)]
    pub cache_read_tokens: u64,
    #[serde(default)]
    pub cache_creation_tokens: u64,
    pub spend: Money,
    pub start_time: u64,
    pub end_time: u64,
    pub status: u16,
    pub streamed: bool,
    /// The usage was estimated (a stream cut before Databricks reported any).
    pub estimated: bool,
    /// Who else the request is attributed to: the key's team and internal user, the end user
    /// (the request's `user`), and the request's `metadata.tags`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_user: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettleRequest {
    pub settlement: Settlement,
    /// Kept in the ledger's spend log (not for deployment ledgers).
    pub row: Option<SpendLogRow>,
}

/// Blocks (`reason`: blocked, deleted) or unblocks (`None`) a key at once, and records its
/// current hash so that a regenerated key's old secret is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeRequest {
    pub reason: Option<String>,
    pub key_hash: Option<String>,
    /// The model groups the key may now use (`None`: all).
    #[serde(default)]
    pub scope: Option<Vec<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoRequest {
    pub limits: Limits,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerInfo {
    pub spend: Money,
    pub budget_reset_at: Option<u64>,
    /// Each budgeted model's spend in its period (pico-dollars), and when the periods began.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_spend: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub model_period_start: BTreeMap<String, u64>,
}

impl LedgerInfo {
    /// LiteLLM's `model_max_budget_usage` of `/key/info`: per budgeted model, its spend in the
    /// current period (USD), its budget and period, and when the period ends.
    pub fn model_budget_usage(&self, limits: &Limits) -> serde_json::Value {
        let mut usage = serde_json::Map::new();
        for (model, budget) in &limits.model_budgets {
            let spent = Money::from_pico(self.model_spend.get(model).copied().unwrap_or(0));
            let reset_at = super::model_period_end(limits, &self.model_period_start, model);
            usage.insert(
                model.clone(),
                serde_json::json!({
                    "current_spend": spent.usd(),
                    "budget_limit": Money::from_pico(*budget).usd(),
                    "time_period": limits.model_budget_periods.get(model),
                    "budget_reset_at": reset_at.map(crate::time::format_rfc3339),
                }),
            );
        }
        serde_json::Value::Object(usage)
    }
}

/// Filters of `/spend/logs`, applied by each ledger to its own rows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsQuery {
    pub request_id: Option<String>,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub limit: u64,
}

impl SpendLogRow {
    /// The row as `/spend/logs` answers it (LiteLLM's names, RFC 3339 times, USD).
    pub fn to_api(&self) -> serde_json::Value {
        serde_json::json!({
            "request_id": self.request_id,
            "call_id": self.call_id,
            "api_key": self.api_key,
            "key_alias": self.key_alias,
            "model_group": self.model_group,
            "model_id": self.deployment,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens.saturating_add(self.completion_tokens),
            "cache_read_input_tokens": self.cache_read_tokens,
            "cache_creation_input_tokens": self.cache_creation_tokens,
            "spend": self.spend.usd(),
            "startTime": crate::time::format_rfc3339(self.start_time),
            "endTime": crate::time::format_rfc3339(self.end_time),
            "status": if (200..300).contains(&self.status) { "success" } else { "failure" },
            "status_code": self.status,
            "stream": self.streamed,
            "estimated": self.estimated,
            "team_id": self.team_id,
            "user": self.user_id,
            "end_user": self.end_user,
            "request_tags": self.tags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_budget_usage_is_litellms_shape_in_dollars() {
        let limits = Limits {
            model_budgets: [("a".to_string(), 50_000_000_000), ("b".to_string(), 1_000_000_000_000)].into(),
            model_budget_periods: [("a".to_string(), "1d".to_string())].into(),
            ..Limits::default()
        };
        let info = LedgerInfo {
            spend: Money::ZERO,
            budget_reset_at: None,
            model_spend: [("a".to_string(), 20_000_000_000)].into(),
            model_period_start: [("a".to_string(), 1_800_000_000_000)].into(),
        };
        assert_eq!(
            info.model_budget_usage(&limits),
            serde_json::json!({
                "a": {"current_spend": 0.02, "budget_limit": 0.05, "time_period": "1d",
                      "budget_reset_at": crate::time::format_rfc3339(1_800_000_000_000 + 86_400_000)},
                "b": {"current_spend": 0.0, "budget_limit": 1.0, "time_period": null, "budget_reset_at": null},
            })
        );
        // An answer from a ledger without model budgets reads as such.
        let old: LedgerInfo = serde_json::from_str(r#"{"spend":5,"budget_reset_at":null}"#).unwrap();
        assert!(old.model_spend.is_empty());
    }
}
