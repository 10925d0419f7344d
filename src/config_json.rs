//! The embedded config read back from the JSON `build.rs` wrote, by hand ([`crate::fields`]):
//! serde's derived readers of the config's types would be compiled into the wasm for this one
//! read. Written by serde (`build.rs`), in the same shape: `{"literal": ..}` / `{"env": ..}`
//! for a [`ValueRef`], kebab-case strategies, `[name, list]` pairs. The router settings are
//! also written by hand ([`ToJson`]): a failure report to a group's health object holds them.

use serde_json::Value;

use crate::config::{
    AccessGroup, Deployment, GatewayConfig, ModelInfo, OAuthClient, RouterSettings, Strategy, ValueRef,
};
use crate::fields::{bool, money, string, strings, u64, Fields, FromJson};
use crate::json::{ObjectWriter, ToJson};

impl FromJson for GatewayConfig {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let config = GatewayConfig {
            deployments: f.req("deployments", |v| list(v, Deployment::from_json)),
            master_key: f.opt("master_key", value_ref),
            enforce_model_rate_limits: f.or_default("enforce_model_rate_limits", bool),
            router: f.or_default("router", |v| RouterSettings::from_json(v).ok()),
            drop_params: f.or_default("drop_params", bool),
            access_groups: f.or_default("access_groups", |v| {
                v.as_array()?.iter().map(|g| pair(g).map(|(name, models)| AccessGroup { name, models })).collect()
            }),
        };
        f.finish(config)
    }
}

impl FromJson for RouterSettings {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let settings = RouterSettings {
            strategy: f.req("strategy", |v| strategy(v).map(Some)).unwrap_or(Strategy::SimpleShuffle),
            num_retries: f.req("num_retries", u32),
            allowed_fails: f.req("allowed_fails", u32),
            cooldown_ms: f.req("cooldown_ms", u64),
            enable_pre_call_checks: f.req("enable_pre_call_checks", bool),
            timeout_ms: f.opt("timeout_ms", u64),
            fallbacks: f.req("fallbacks", pairs),
            context_window_fallbacks: f.req("context_window_fallbacks", pairs),
            default_fallbacks: f.req("default_fallbacks", strings),
        };
        f.finish(settings)
    }
}

/// As serde's derive writes it (the same fields, in the same order).
impl ToJson for RouterSettings {
    fn write_json(&self, out: &mut Vec<u8>) {
        let RouterSettings {
            strategy,
            num_retries,
            allowed_fails,
            cooldown_ms,
            enable_pre_call_checks,
            timeout_ms,
            fallbacks,
            context_window_fallbacks,
            default_fallbacks,
        } = self;
        let strategy = match strategy {
            Strategy::SimpleShuffle => "simple-shuffle",
            Strategy::LeastBusy => "least-busy",
            Strategy::LatencyBasedRouting => "latency-based-routing",
            Strategy::UsageBasedRoutingV2 => "usage-based-routing-v2",
        };
        let mut o = ObjectWriter::new(out);
        o.field("strategy", strategy).field("num_retries", num_retries).field("allowed_fails", allowed_fails);
        o.field("cooldown_ms", cooldown_ms).field("enable_pre_call_checks", enable_pre_call_checks);
        o.field("timeout_ms", timeout_ms).field("fallbacks", fallbacks);
        o.field("context_window_fallbacks", context_window_fallbacks).field("default_fallbacks", default_fallbacks);
        o.end();
    }
}

impl FromJson for Deployment {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let deployment = Deployment {
            id: f.req("id", string),
            model_name: f.req("model_name", string),
            endpoint: f.req("endpoint", string),
            api_base: f.req("api_base", |v| value_ref(v).map(Some)).unwrap_or(ValueRef::Literal(String::new())),
            api_key: f.req("api_key", |v| value_ref(v).map(Some)).unwrap_or(ValueRef::Literal(String::new())),
            oauth: f.opt("oauth", |v| {
                let f = Fields::of(v).ok()?;
                let client = OAuthClient {
                    client_id: f.req("client_id", |v| value_ref(v).map(Some))?,
                    client_secret: f.req("client_secret", |v| value_ref(v).map(Some))?,
                };
                f.finish(client).ok()
            }),
            timeout_ms: f.req("timeout_ms", u64),
            stream_timeout_ms: f.req("stream_timeout_ms", u64),
            rpm: f.opt("rpm", u64),
            tpm: f.opt("tpm", u64),
            weight: f.opt("weight", Value::as_f64),
            order: f.opt("order", u64),
            info: f.req("info", |v| ModelInfo::from_json(v).ok()),
        };
        f.finish(deployment)
    }
}

impl FromJson for ModelInfo {
    fn from_json(value: &Value) -> Result<Self, String> {
        let f = Fields::of(value)?;
        let info = ModelInfo {
            input_cost_per_token: f.opt("input_cost_per_token", money),
            output_cost_per_token: f.opt("output_cost_per_token", money),
            cache_read_input_token_cost: f.opt("cache_read_input_token_cost", money),
            cache_creation_input_token_cost: f.opt("cache_creation_input_token_cost", money),
            max_input_tokens: f.opt("max_input_tokens", u64),
            max_output_tokens: f.opt("max_output_tokens", u64),
            mode: f.opt("mode", string),
        };
        f.finish(info)
    }
}

fn list<T>(v: &Value, read: fn(&Value) -> Result<T, String>) -> Option<Vec<T>> {
    v.as_array()?.iter().map(|item| read(item).ok()).collect()
}

fn u32(v: &Value) -> Option<u32> {
    v.as_u64()?.try_into().ok()
}

/// `req` gives a type's default for a field it cannot read (and fails the record); these types
/// have none, so they are read as `Some`.
///
/// serde's external tagging: an object of one entry, the variant's name and its value.
fn value_ref(v: &Value) -> Option<ValueRef> {
    let map = v.as_object().filter(|m| m.len() == 1)?;
    let (tag, inner) = map.iter().next()?;
    let inner = string(inner)?;
    match tag.as_str() {
        "literal" => Some(ValueRef::Literal(inner)),
        "env" => Some(ValueRef::Env(inner)),
        _ => None,
    }
}

fn strategy(v: &Value) -> Option<Strategy> {
    Some(match v.as_str()? {
        "simple-shuffle" => Strategy::SimpleShuffle,
        "least-busy" => Strategy::LeastBusy,
        "latency-based-routing" => Strategy::LatencyBasedRouting,
        "usage-based-routing-v2" => Strategy::UsageBasedRoutingV2,
        _ => return None,
    })
}

/// A `[name, [names..]]` pair.
fn pair(v: &Value) -> Option<(String, Vec<String>)> {
    match v.as_array()?.as_slice() {
        [name, list] => Some((string(name)?, strings(list)?)),
        _ => None,
    }
}

fn pairs(v: &Value) -> Option<Vec<(String, Vec<String>)>> {
    v.as_array()?.iter().map(pair).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::normalise::{parse, Parsed};

    fn parse_yaml(text: &str) -> Parsed {
        parse(&serde_yaml::from_str(text).unwrap()).unwrap()
    }

    /// Every config the project has, written as build.rs writes it, reads back the same.
    #[test]
    fn configs_read_back_as_written() {
        let mut seen = (false, false, false, false);
        for path in [
            "config/litellm_config.yaml",
            "tests/fixtures/litellm_config.yaml",
            "tests/fixtures/latency.yaml",
            "tests/fixtures/least_busy.yaml",
            "tests/fixtures/no_master.yaml",
            "tests/fixtures/router.yaml",
        ] {
            let config = parse_yaml(&std::fs::read_to_string(path).unwrap()).config;
            let written = serde_json::to_value(&config).unwrap();
            assert_eq!(GatewayConfig::from_json(&written).unwrap(), config, "{path}");
            let router = crate::json::to_string(&config.router);
            assert_eq!(router, serde_json::to_string(&config.router).unwrap(), "{path}");
            assert_eq!(RouterSettings::from_json(&serde_json::from_str(&router).unwrap()).unwrap(), config.router);
            seen.0 |= config.deployments.iter().any(|d| d.oauth.is_some());
            seen.1 |= config.deployments.iter().any(|d| d.weight.is_some());
            seen.2 |= !config.router.fallbacks.is_empty();
            seen.3 |= !config.access_groups.is_empty();
        }
        assert_eq!(seen, (true, true, true, true), "the configs have OAuth, weights, fallbacks and access groups");
    }

    #[test]
    fn a_config_of_the_wrong_shape_is_refused() {
        let config = parse_yaml(&std::fs::read_to_string("tests/fixtures/router.yaml").unwrap()).config;
        let written = serde_json::to_value(&config).unwrap();
        for (pointer, bad) in [
            ("/deployments/0/api_key", serde_json::json!({"other": "x"})),
            ("/deployments/0/timeout_ms", serde_json::json!("soon")),
            ("/router/strategy", serde_json::json!("fastest")),
            ("/router/fallbacks", serde_json::json!([["a"]])),
        ] {
            let mut v = written.clone();
            *v.pointer_mut(pointer).unwrap() = bad;
            assert!(GatewayConfig::from_json(&v).is_err(), "{pointer}");
        }
    }
}
