//! The ledger object's requests, answers and stored entries, read by hand ([`crate::fields`])
//! rather than by serde's derived readers, which would compile each type's parsing into the
//! wasm inline, with the same rules: see the derives' attributes on each type. Written by hand
//! too ([`ToJson`], below the readers), as the derived writers write them.

use serde_json::Value;

use super::messages::{InfoRequest, LedgerInfo, LogsQuery, ReleaseRequest, RevokeRequest, SettleRequest, SpendLogRow};
use super::{AdmitRequest, Decision, Entry, EntryState, Limits, RateInfo, Settled, Settlement};
use crate::fields::{bool, money, string, string_map, strings, u64, u64_map, Fields, FromJson};
use crate::json::{ObjectWriter, ToJson};
use crate::pricing::{PriceSource, Prices};

impl FromJson for Limits {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let limits = Limits {
            rpm: f.opt("rpm", u64),
            tpm: f.opt("tpm", u64),
            max_parallel: f.opt("max_parallel", u64),
            model_rpm: f.or_default("model_rpm", u64_map),
            model_tpm: f.or_default("model_tpm", u64_map),
            max_budget: f.opt("max_budget", money),
            budget_duration: f.opt("budget_duration", string),
            soft_budget: f.opt("soft_budget", money),
            model_budgets: f.or_default("model_budgets", u64_map),
            model_budget_periods: f.or_default("model_budget_periods", string_map),
        };
        f.finish(limits)
    }
}

fn limits(v: &Value) -> Option<Limits> {
    Limits::from_json(v).ok()
}

impl FromJson for Prices {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let source = f.req("source", |v| {
            Some(Some(match v.as_str()? {
                "config" => PriceSource::Config,
                "builtin" => PriceSource::Builtin,
                "unknown" => PriceSource::Unknown,
                _ => return None,
            }))
        });
        let prices = Prices {
            input: f.req("input", money),
            output: f.req("output", money),
            cache_read: f.or_default("cache_read", money),
            cache_creation: f.or_default("cache_creation", money),
            // Read as `Some` (`req` needs a default); a missing or unknown source failed `f`.
            source: source.unwrap_or(PriceSource::Unknown),
        };
        f.finish(prices)
    }
}

impl FromJson for AdmitRequest {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let prices = f.req("prices", |v| Prices::from_json(v).ok().map(Some));
        let request = AdmitRequest {
            id: f.req("id", string),
            model: f.req("model", string),
            key_hash: f.opt("key_hash", string),
            prompt_tokens_estimate: f.req("prompt_tokens_estimate", u64),
            prompt_tokens_bound: f.req("prompt_tokens_bound", u64),
            max_tokens: f.opt("max_tokens", u64),
            // `#[serde(default = "one")]`
            choices: f.opt("choices", u64).unwrap_or(1),
            output_cap: f.req("output_cap", u64),
            prices: prices.unwrap_or(Prices {
                input: crate::money::Money::ZERO,
                output: crate::money::Money::ZERO,
                cache_read: crate::money::Money::ZERO,
                cache_creation: crate::money::Money::ZERO,
                source: PriceSource::Unknown,
            }),
            lease_ms: f.req("lease_ms", u64),
            limits: f.req("limits", limits),
            access_groups: f.or_default("access_groups", strings),
        };
        f.finish(request)
    }
}

impl FromJson for SpendLogRow {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let row = SpendLogRow {
            request_id: f.req("request_id", string),
            call_id: f.req("call_id", string),
            api_key: f.req("api_key", string),
            key_alias: f.opt("key_alias", string),
            model_group: f.req("model_group", string),
            deployment: f.req("deployment", string),
            prompt_tokens: f.req("prompt_tokens", u64),
            completion_tokens: f.req("completion_tokens", u64),
            cache_read_tokens: f.or_default("cache_read_tokens", u64),
            cache_creation_tokens: f.or_default("cache_creation_tokens", u64),
            spend: f.req("spend", money),
            start_time: f.req("start_time", u64),
            end_time: f.req("end_time", u64),
            status: f.req("status", |v| v.as_u64()?.try_into().ok()),
            streamed: f.req("streamed", bool),
            estimated: f.req("estimated", bool),
            team_id: f.opt("team_id", string),
            user_id: f.opt("user_id", string),
            end_user: f.opt("end_user", string),
            tags: f.or_default("tags", strings),
        };
        f.finish(row)
    }
}

impl FromJson for SettleRequest {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let settlement = f.req("settlement", |v| {
            let f = Fields::of(v).ok()?;
            let settlement = Settlement {
                id: f.req("id", string),
                prompt_tokens: f.req("prompt_tokens", u64),
                completion_tokens: f.req("completion_tokens", u64),
                cost: f.req("cost", money),
                limits: f.req("limits", limits),
            };
            f.finish(settlement).ok().map(Some)
        });
        let row = f.opt("row", |v| SpendLogRow::from_json(v).ok());
        let request = SettleRequest {
            settlement: settlement.unwrap_or_else(|| Settlement {
                id: String::new(),
                prompt_tokens: 0,
                completion_tokens: 0,
                cost: crate::money::Money::ZERO,
                limits: Limits::default(),
            }),
            row,
        };
        f.finish(request)
    }
}

impl FromJson for ReleaseRequest {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let request = ReleaseRequest { id: f.req("id", string), limits: f.req("limits", limits) };
        f.finish(request)
    }
}

impl FromJson for RevokeRequest {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let request = RevokeRequest {
            reason: f.opt("reason", string),
            key_hash: f.opt("key_hash", string),
            scope: f.opt("scope", strings),
        };
        f.finish(request)
    }
}

impl FromJson for InfoRequest {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let request = InfoRequest { limits: f.req("limits", limits) };
        f.finish(request)
    }
}

impl FromJson for LogsQuery {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let query = LogsQuery {
            request_id: f.opt("request_id", string),
            start_ms: f.opt("start_ms", u64),
            end_ms: f.opt("end_ms", u64),
            limit: f.req("limit", u64),
        };
        f.finish(query)
    }
}

impl FromJson for Entry {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        // Read as `Some` (`req` needs a default): a state that cannot be read failed `f`.
        let state = f.req("state", |v| entry_state(v).map(Some));
        let entry = Entry {
            id: f.req("id", string),
            at: f.req("at", u64),
            model: f.req("model", string),
            tokens: f.req("tokens", u64),
            state: state.unwrap_or(EntryState::Settled),
        };
        f.finish(entry)
    }
}

/// `{"state": "reserved", "cost": .., "lease_until": ..}` and the like (see `EntryStateWire`).
fn entry_state(v: &Value) -> Option<EntryState> {
    let f = Fields::of(v).ok()?;
    let state = match f.req("state", string).as_str() {
        "reserved" => EntryState::Reserved { cost: f.req("cost", money), lease_until: f.req("lease_until", u64) },
        "settled" => EntryState::Settled,
        "estimated" => EntryState::Estimated { charged: f.req("charged", money) },
        "corrected" => EntryState::Corrected,
        _ => return None,
    };
    f.finish(state).ok()
}

/// The object's answer to `/admit` (see `DecisionWire`: the tag and the variant's fields).
impl FromJson for Decision {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let decision = match f.req("decision", string).as_str() {
            "admitted" => Decision::Admitted {
                max_tokens: f.opt("max_tokens", u64),
                rate: f.req("rate", rate),
                spend: f.req("spend", money),
            },
            "rate_limited" => Decision::RateLimited {
                message: f.req("message", string),
                retry_after_ms: f.req("retry_after_ms", u64),
                rate: f.req("rate", rate),
            },
            "budget_exceeded" => Decision::BudgetExceeded {
                committed: f.req("committed", money),
                max_budget: f.req("max_budget", money),
            },
            "revoked" => Decision::Revoked { reason: f.req("reason", string) },
            "model_not_allowed" => Decision::ModelNotAllowed { models: f.req("models", strings) },
            "model_budget_exceeded" => Decision::ModelBudgetExceeded {
                model: f.req("model", string),
                committed: f.req("committed", money),
                max_budget: f.req("max_budget", money),
            },
            other => return Err(format!("unknown decision `{other}`")),
        };
        f.finish(decision)
    }
}

fn rate(v: &Value) -> Option<RateInfo> {
    let f = Fields::of(v).ok()?;
    let rate = RateInfo {
        limit_requests: f.opt("limit_requests", u64),
        remaining_requests: f.opt("remaining_requests", u64),
        reset_requests_ms: f.opt("reset_requests_ms", u64),
        limit_tokens: f.opt("limit_tokens", u64),
        remaining_tokens: f.opt("remaining_tokens", u64),
        reset_tokens_ms: f.opt("reset_tokens_ms", u64),
    };
    f.finish(rate).ok()
}

impl FromJson for Settled {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let settled = Settled {
            spend: f.req("spend", money),
            soft_budget_crossed: f.req("soft_budget_crossed", bool),
            duplicate: f.req("duplicate", bool),
        };
        f.finish(settled)
    }
}

impl FromJson for LedgerInfo {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let info = LedgerInfo {
            spend: f.req("spend", money),
            budget_reset_at: f.opt("budget_reset_at", u64),
            model_spend: f.or_default("model_spend", u64_map),
            model_period_start: f.or_default("model_period_start", u64_map),
        };
        f.finish(info)
    }
}

// The writers: each field in the derive's order, destructured so that a field added to a
// type and not written here fails to compile.

impl ToJson for Limits {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Limits {
            rpm,
            tpm,
            max_parallel,
            model_rpm,
            model_tpm,
            max_budget,
            budget_duration,
            soft_budget,
            model_budgets,
            model_budget_periods,
        } = self;
        let mut o = ObjectWriter::new(out);
        o.field("rpm", rpm).field("tpm", tpm).field("max_parallel", max_parallel);
        o.field("model_rpm", model_rpm).field("model_tpm", model_tpm);
        o.field("max_budget", max_budget).field("budget_duration", budget_duration).field("soft_budget", soft_budget);
        if !model_budgets.is_empty() {
            o.field("model_budgets", model_budgets);
        }
        if !model_budget_periods.is_empty() {
            o.field("model_budget_periods", model_budget_periods);
        }
        o.end();
    }
}

impl ToJson for Prices {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Prices { input, output, cache_read, cache_creation, source } = self;
        let mut o = ObjectWriter::new(out);
        o.field("input", input).field("output", output);
        o.field("cache_read", cache_read).field("cache_creation", cache_creation).field("source", source.name());
        o.end();
    }
}

impl ToJson for AdmitRequest {
    fn write_json(&self, out: &mut Vec<u8>) {
        let AdmitRequest {
            id,
            model,
            key_hash,
            prompt_tokens_estimate,
            prompt_tokens_bound,
            max_tokens,
            choices,
            output_cap,
            prices,
            lease_ms,
            limits,
            access_groups,
        } = self;
        let mut o = ObjectWriter::new(out);
        o.field("id", id).field("model", model).field("key_hash", key_hash);
        o.field("prompt_tokens_estimate", prompt_tokens_estimate).field("prompt_tokens_bound", prompt_tokens_bound);
        o.field("max_tokens", max_tokens).field("choices", choices).field("output_cap", output_cap);
        o.field("prices", prices).field("lease_ms", lease_ms).field("limits", limits);
        if !access_groups.is_empty() {
            o.field("access_groups", access_groups);
        }
        o.end();
    }
}

impl ToJson for SpendLogRow {
    fn write_json(&self, out: &mut Vec<u8>) {
        let SpendLogRow {
            request_id,
            call_id,
            api_key,
            key_alias,
            model_group,
            deployment,
            prompt_tokens,
            completion_tokens,
            cache_read_tokens,
            cache_creation_tokens,
            spend,
            start_time,
            end_time,
            status,
            streamed,
            estimated,
            team_id,
            user_id,
            end_user,
            tags,
        } = self;
        let mut o = ObjectWriter::new(out);
        o.field("request_id", request_id).field("call_id", call_id).field("api_key", api_key);
        o.field("key_alias", key_alias).field("model_group", model_group).field("deployment", deployment);
        o.field("prompt_tokens", prompt_tokens).field("completion_tokens", completion_tokens);
        o.field("cache_read_tokens", cache_read_tokens).field("cache_creation_tokens", cache_creation_tokens);
        o.field("spend", spend).field("start_time", start_time).field("end_time", end_time);
        o.field("status", status).field("streamed", streamed).field("estimated", estimated);
        o.some("team_id", team_id).some("user_id", user_id).some("end_user", end_user);
        if !tags.is_empty() {
            o.field("tags", tags);
        }
        o.end();
    }
}

impl ToJson for Settlement {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Settlement { id, prompt_tokens, completion_tokens, cost, limits } = self;
        let mut o = ObjectWriter::new(out);
        o.field("id", id).field("prompt_tokens", prompt_tokens).field("completion_tokens", completion_tokens);
        o.field("cost", cost).field("limits", limits);
        o.end();
    }
}

impl ToJson for SettleRequest {
    fn write_json(&self, out: &mut Vec<u8>) {
        let SettleRequest { settlement, row } = self;
        let mut o = ObjectWriter::new(out);
        o.field("settlement", settlement).field("row", row);
        o.end();
    }
}

impl ToJson for ReleaseRequest {
    fn write_json(&self, out: &mut Vec<u8>) {
        let ReleaseRequest { id, limits } = self;
        let mut o = ObjectWriter::new(out);
        o.field("id", id).field("limits", limits);
        o.end();
    }
}

impl ToJson for RevokeRequest {
    fn write_json(&self, out: &mut Vec<u8>) {
        let RevokeRequest { reason, key_hash, scope } = self;
        let mut o = ObjectWriter::new(out);
        o.field("reason", reason).field("key_hash", key_hash).field("scope", scope);
        o.end();
    }
}

impl ToJson for InfoRequest {
    fn write_json(&self, out: &mut Vec<u8>) {
        let InfoRequest { limits } = self;
        let mut o = ObjectWriter::new(out);
        o.field("limits", limits);
        o.end();
    }
}

impl ToJson for LogsQuery {
    fn write_json(&self, out: &mut Vec<u8>) {
        let LogsQuery { request_id, start_ms, end_ms, limit } = self;
        let mut o = ObjectWriter::new(out);
        o.field("request_id", request_id).field("start_ms", start_ms).field("end_ms", end_ms).field("limit", limit);
        o.end();
    }
}

impl ToJson for Entry {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Entry { id, at, model, tokens, state } = self;
        let mut o = ObjectWriter::new(out);
        o.field("id", id).field("at", at).field("model", model).field("tokens", tokens).field("state", state);
        o.end();
    }
}

/// Internally tagged: `{"state": "reserved", "cost": .., "lease_until": ..}`.
impl ToJson for EntryState {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = ObjectWriter::new(out);
        match self {
            EntryState::Reserved { cost, lease_until } => {
                o.field("state", "reserved").field("cost", cost).field("lease_until", lease_until);
            }
            EntryState::Settled => {
                o.field("state", "settled");
            }
            EntryState::Estimated { charged } => {
                o.field("state", "estimated").field("charged", charged);
            }
            EntryState::Corrected => {
                o.field("state", "corrected");
            }
        }
        o.end();
    }
}

/// Internally tagged: `{"decision": "admitted", ..}`.
impl ToJson for Decision {
    fn write_json(&self, out: &mut Vec<u8>) {
        let mut o = ObjectWriter::new(out);
        match self {
            Decision::Admitted { max_tokens, rate, spend } => {
                o.field("decision", "admitted").field("max_tokens", max_tokens).field("rate", rate);
                o.field("spend", spend);
            }
            Decision::RateLimited { message, retry_after_ms, rate } => {
                o.field("decision", "rate_limited").field("message", message);
                o.field("retry_after_ms", retry_after_ms).field("rate", rate);
            }
            Decision::BudgetExceeded { committed, max_budget } => {
                o.field("decision", "budget_exceeded").field("committed", committed).field("max_budget", max_budget);
            }
            Decision::Revoked { reason } => {
                o.field("decision", "revoked").field("reason", reason);
            }
            Decision::ModelNotAllowed { models } => {
                o.field("decision", "model_not_allowed").field("models", models);
            }
            Decision::ModelBudgetExceeded { model, committed, max_budget } => {
                o.field("decision", "model_budget_exceeded").field("model", model);
                o.field("committed", committed).field("max_budget", max_budget);
            }
        }
        o.end();
    }
}

impl ToJson for RateInfo {
    fn write_json(&self, out: &mut Vec<u8>) {
        let RateInfo {
            limit_requests,
            remaining_requests,
            reset_requests_ms,
            limit_tokens,
            remaining_tokens,
            reset_tokens_ms,
        } = self;
        let mut o = ObjectWriter::new(out);
        o.field("limit_requests", limit_requests).field("remaining_requests", remaining_requests);
        o.field("reset_requests_ms", reset_requests_ms).field("limit_tokens", limit_tokens);
        o.field("remaining_tokens", remaining_tokens).field("reset_tokens_ms", reset_tokens_ms);
        o.end();
    }
}

impl ToJson for Settled {
    fn write_json(&self, out: &mut Vec<u8>) {
        let Settled { spend, soft_budget_crossed, duplicate } = self;
        let mut o = ObjectWriter::new(out);
        o.field("spend", spend).field("soft_budget_crossed", soft_budget_crossed).field("duplicate", duplicate);
        o.end();
    }
}

impl ToJson for LedgerInfo {
    fn write_json(&self, out: &mut Vec<u8>) {
        let LedgerInfo { spend, budget_reset_at, model_spend, model_period_start } = self;
        let mut o = ObjectWriter::new(out);
        o.field("spend", spend).field("budget_reset_at", budget_reset_at);
        if !model_spend.is_empty() {
            o.field("model_spend", model_spend);
        }
        if !model_period_start.is_empty() {
            o.field("model_period_start", model_period_start);
        }
        o.end();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;
    use crate::money::Money;

    /// serde's derived reader is the specification: both read the same.
    fn same<T: FromJson + DeserializeOwned + PartialEq + std::fmt::Debug>(v: Value) {
        let derived: Result<T, _> = serde_json::from_value(v.clone());
        let by_hand = T::from_json(&v);
        match derived {
            Ok(d) => assert_eq!(by_hand.unwrap(), d, "{v}"),
            Err(e) => assert!(by_hand.is_err(), "{v}: serde refuses it ({e})"),
        }
    }

    /// serde's derived writer is the specification too: the same bytes, and they read back.
    fn written<T: ToJson + serde::Serialize + FromJson + PartialEq + std::fmt::Debug>(v: &T) {
        let text = crate::json::to_string(v);
        assert_eq!(text, serde_json::to_string(v).unwrap());
        assert_eq!(&T::from_json(&serde_json::from_str(&text).unwrap()).unwrap(), v, "{text}");
    }

    #[test]
    fn messages_and_entries_are_written_as_serde_writes_them() {
        let limits: Limits = serde_json::from_value(json!({"rpm": 5, "tpm": null, "max_parallel": 2,
            "model_rpm": {"a": 1, "b\"": 2}, "max_budget": 1000, "budget_duration": "1d", "soft_budget": null,
            "model_budgets": {"a": 7}, "model_budget_periods": {"a": "1h"}}))
        .unwrap();
        written(&limits);
        written(&Limits::default());
        let prices = Prices {
            input: Money::from_pico(1),
            output: Money::from_pico(u64::MAX),
            cache_read: Money::ZERO,
            cache_creation: Money::from_pico(4),
            source: PriceSource::Builtin,
        };
        for source in [PriceSource::Config, PriceSource::Builtin, PriceSource::Unknown] {
            written(&Prices { source, ..prices });
        }
        let admit = AdmitRequest {
            id: "call-1".into(),
            model: "gpt \u{e9}\n".into(),
            key_hash: Some("h".into()),
            prompt_tokens_estimate: 10,
            prompt_tokens_bound: 20,
            max_tokens: None,
            choices: 2,
            output_cap: 100,
            prices,
            lease_ms: 5,
            limits: limits.clone(),
            access_groups: vec!["g".into()],
        };
        written(&admit);
        written(&AdmitRequest { key_hash: None, max_tokens: Some(7), access_groups: vec![], ..admit });
        let row = SpendLogRow {
            request_id: "r".into(),
            call_id: "c".into(),
            api_key: "k".into(),
            key_alias: Some("al".into()),
            model_group: "g".into(),
            deployment: "d".into(),
            prompt_tokens: 3,
            completion_tokens: 4,
            cache_read_tokens: 1,
            cache_creation_tokens: 0,
            spend: Money::from_pico(9),
            start_time: 1,
            end_time: 2,
            status: 429,
            streamed: true,
            estimated: false,
            team_id: Some("t".into()),
            user_id: None,
            end_user: Some("e".into()),
            tags: vec!["x".into(), "y".into()],
        };
        written(&row);
        written(&SpendLogRow::default());
        let settlement =
            Settlement { id: "i".into(), prompt_tokens: 1, completion_tokens: 2, cost: Money::from_pico(3), limits };
        let settle = SettleRequest { settlement: settlement.clone(), row: Some(row) };
        written(&settle);
        written(&SettleRequest { settlement: settlement.clone(), row: None });
        written(&vec![settle.clone(), settle]);
        written(&ReleaseRequest { id: "i".into(), limits: Limits::default() });
        written(&RevokeRequest { reason: Some("blocked".into()), key_hash: None, scope: Some(vec!["a".into()]) });
        written(&RevokeRequest { reason: None, key_hash: Some("h".into()), scope: None });
        written(&InfoRequest { limits: Limits::default() });
        written(&LogsQuery { request_id: Some("r".into()), start_ms: None, end_ms: Some(9), limit: 10 });
        for state in [
            EntryState::Reserved { cost: Money::from_pico(5), lease_until: 9 },
            EntryState::Settled,
            EntryState::Estimated { charged: Money::from_pico(3) },
            EntryState::Corrected,
        ] {
            written(&Entry { id: "i".into(), at: 1, model: "m".into(), tokens: 7, state });
        }
        let rate = RateInfo { limit_requests: Some(5), remaining_requests: Some(4), ..RateInfo::default() };
        for decision in [
            Decision::Admitted { max_tokens: None, rate: rate.clone(), spend: Money::from_pico(1) },
            Decision::Admitted { max_tokens: Some(9), rate: RateInfo::default(), spend: Money::ZERO },
            Decision::RateLimited { message: "m \"q\"".into(), retry_after_ms: 5, rate },
            Decision::BudgetExceeded { committed: Money::from_pico(5), max_budget: Money::from_pico(4) },
            Decision::Revoked { reason: "blocked".into() },
            Decision::ModelNotAllowed { models: vec![] },
            Decision::ModelNotAllowed { models: vec!["a".into(), "b".into()] },
            Decision::ModelBudgetExceeded {
                model: "a".into(),
                committed: Money::from_pico(5),
                max_budget: Money::from_pico(4),
            },
        ] {
            written(&decision);
        }
        written(&Settled { spend: Money::from_pico(5), soft_budget_crossed: true, duplicate: false });
        written(&vec![Settled { spend: Money::ZERO, soft_budget_crossed: false, duplicate: true }]);
        let info = LedgerInfo {
            spend: Money::from_pico(5),
            budget_reset_at: None,
            model_spend: BTreeMap::new(),
            model_period_start: BTreeMap::new(),
        };
        written(&info);
        written(&LedgerInfo {
            budget_reset_at: Some(9),
            model_spend: [("a".to_string(), 1)].into(),
            model_period_start: [("a".to_string(), 2)].into(),
            ..info
        });
    }

    #[test]
    fn requests_read_as_serde_reads_them() {
        let limits = json!({"rpm": 5, "tpm": null, "max_parallel": 2, "model_rpm": {"a": 1}, "max_budget": 1000,
            "budget_duration": "1d", "soft_budget": null, "model_budgets": {"a": 7}, "model_budget_periods": {"a": "1h"}});
        let prices = json!({"input": 1, "output": 2, "cache_read": 3, "source": "builtin"});
        let row = json!({"request_id": "r", "call_id": "c", "api_key": "k", "key_alias": "al", "model_group": "g",
            "deployment": "d", "prompt_tokens": 3, "completion_tokens": 4, "spend": 9, "start_time": 1, "end_time": 2,
            "status": 200, "streamed": true, "estimated": false, "team_id": "t", "tags": ["x"]});
        let admit = json!({"id": "i", "model": "m", "key_hash": "h", "prompt_tokens_estimate": 10,
            "prompt_tokens_bound": 20, "max_tokens": null, "output_cap": 100, "prices": prices, "lease_ms": 5,
            "limits": limits, "access_groups": ["g"]});
        same::<Limits>(limits.clone());
        same::<Limits>(json!({}));
        same::<Limits>(json!({"rpm": -1}));
        same::<Prices>(prices.clone());
        same::<Prices>(json!({"input": 1, "output": 2, "source": "elsewhere"}));
        same::<AdmitRequest>(admit.clone());
        let mut minimal = admit.clone();
        for field in ["choices", "access_groups", "key_hash"] {
            minimal.as_object_mut().unwrap().remove(field);
        }
        same::<AdmitRequest>(minimal);
        let mut no_limits = admit;
        no_limits.as_object_mut().unwrap().remove("limits");
        same::<AdmitRequest>(no_limits);
        same::<SpendLogRow>(row.clone());
        same::<SpendLogRow>(json!({"status": 70000}));
        let settle = json!({"settlement": {"id": "i", "prompt_tokens": 1, "completion_tokens": 2, "cost": 3,
            "limits": limits}, "row": row});
        same::<SettleRequest>(settle.clone());
        same::<SettleRequest>(json!({"settlement": settle["settlement"], "row": null}));
        same::<SettleRequest>(json!({"settlement": {"id": "i"}, "row": null}));
        same::<Vec<SettleRequest>>(json!([settle, settle]));
        same::<ReleaseRequest>(json!({"id": "i", "limits": limits}));
        same::<RevokeRequest>(json!({"reason": "blocked", "key_hash": null, "scope": ["a"]}));
        same::<RevokeRequest>(json!({}));
        same::<InfoRequest>(json!({"limits": {}}));
        same::<LogsQuery>(json!({"request_id": null, "start_ms": 1, "limit": 10}));
        same::<LogsQuery>(json!({"limit": "ten"}));
        for state in [
            json!({"state": "reserved", "cost": 5, "lease_until": 9}),
            json!({"state": "reserved", "cost": 5}),
            json!({"state": "settled"}),
            json!({"state": "estimated", "charged": 3}),
            json!({"state": "estimated"}),
            json!({"state": "corrected", "extra": 1}),
            json!({"state": "lost"}),
            json!("settled"),
        ] {
            same::<Entry>(json!({"id": "i", "at": 1, "model": "m", "tokens": 7, "state": state}));
        }
        same::<Entry>(json!({"id": "i", "at": 1, "model": "m", "tokens": 7}));
        let rate = json!({"limit_requests": 5, "remaining_requests": 4, "reset_requests_ms": 100});
        for decision in [
            json!({"decision": "admitted", "max_tokens": null, "rate": rate, "spend": 1}),
            json!({"decision": "admitted", "max_tokens": 9, "rate": {}, "spend": 1}),
            json!({"decision": "admitted", "spend": 1}),
            json!({"decision": "rate_limited", "message": "m", "retry_after_ms": 5, "rate": rate}),
            json!({"decision": "rate_limited", "message": "m", "rate": rate}),
            json!({"decision": "budget_exceeded", "committed": 5, "max_budget": 4}),
            json!({"decision": "revoked", "reason": "blocked"}),
            json!({"decision": "revoked"}),
            json!({"decision": "model_not_allowed", "models": ["a"]}),
            json!({"decision": "model_budget_exceeded", "model": "a", "committed": 5, "max_budget": 4}),
            json!({"decision": "maybe"}),
            json!({}),
        ] {
            same::<Decision>(decision);
        }
        same::<Settled>(json!({"spend": 5, "soft_budget_crossed": false, "duplicate": true}));
        same::<Settled>(json!({"spend": 5}));
        same::<LedgerInfo>(json!({"spend": 5, "budget_reset_at": null}));
        same::<LedgerInfo>(
            json!({"spend": 5, "budget_reset_at": 9, "model_spend": {"a": 1}, "model_period_start": {"a": 2}}),
        );
    }
}
