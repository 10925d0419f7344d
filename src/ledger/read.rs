//! The ledger object's requests, read by hand ([`crate::fields`]) rather than by serde's derived
//! readers, which would compile each type's parsing into the wasm inline. Written by serde (the
//! gateway's stubs), read with the same rules: see the derives' attributes on each type.

use serde_json::Value;

use super::messages::{InfoRequest, LedgerInfo, LogsQuery, ReleaseRequest, RevokeRequest, SettleRequest, SpendLogRow};
use super::{AdmitRequest, Decision, Entry, EntryState, Limits, RateInfo, Settled, Settlement};
use crate::fields::{bool, money, string, string_map, strings, u64, u64_map, Fields, FromJson};
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

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;
    use serde_json::json;

    use super::*;

    /// serde's derived reader is the specification: both read the same.
    fn same<T: FromJson + DeserializeOwned + PartialEq + std::fmt::Debug>(v: Value) {
        let derived: Result<T, _> = serde_json::from_value(v.clone());
        let by_hand = T::from_json(&v);
        match derived {
            Ok(d) => assert_eq!(by_hand.unwrap(), d, "{v}"),
            Err(e) => assert!(by_hand.is_err(), "{v}: serde refuses it ({e})"),
        }
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
