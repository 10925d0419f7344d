//! The shape of LiteLLM's `litellm_config.yaml`, as serde structs.
//!
//! Each field holds what the file says, checked only as far as the value alone allows (its type,
//! a number's range, an env reference's syntax); `normalise` checks what needs the whole file and
//! turns it into the gateway's [`GatewayConfig`](crate::config::GatewayConfig).
//! Keys the gateway does not read land in each struct's `unknown`, to be warned about, not refused.
//!
//! Only build.rs and the tests compile this module (with `serde_path_to_error` naming the field
//! of an error), so none of it is in the wasm. It reaches the normalised types as `crate::config`,
//! a path that is the same in both crates.

use serde::de::{Deserializer, Error as _, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::{Strategy, ValueRef};

/// The whole file. `model_list` is an Option so that a missing list gets the gateway's own words.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping")]
pub struct LitellmConfig {
    #[serde(default, deserialize_with = "present")]
    pub model_list: Option<Vec<ModelEntry>>,
    pub litellm_settings: Option<LitellmSettings>,
    pub router_settings: Option<RouterSettings>,
    pub general_settings: Option<GeneralSettings>,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

/// One `model_list` entry.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping")]
pub struct ModelEntry {
    #[serde(default, deserialize_with = "present")]
    pub model_name: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub litellm_params: Option<LitellmParams>,
    pub model_info: Option<ModelInfo>,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping")]
pub struct LitellmParams {
    #[serde(default, deserialize_with = "present")]
    pub model: Option<DatabricksEndpoint>,
    pub api_base: Option<EnvOrLiteral>,
    pub api_key: Option<EnvOrLiteral>,
    // A null client id or secret is refused, not read as absent: half a service principal must
    // not quietly fall back to the token.
    #[serde(default, deserialize_with = "present")]
    pub client_id: Option<EnvOrLiteral>,
    #[serde(default, deserialize_with = "present")]
    pub client_secret: Option<EnvOrLiteral>,
    pub timeout: Option<Seconds>,
    pub stream_timeout: Option<Seconds>,
    pub input_cost_per_token: Option<UsdPerToken>,
    pub output_cost_per_token: Option<UsdPerToken>,
    pub cache_read_input_token_cost: Option<UsdPerToken>,
    pub cache_creation_input_token_cost: Option<UsdPerToken>,
    pub rpm: Option<Count>,
    pub tpm: Option<Count>,
    pub weight: Option<Weight>,
    pub order: Option<Count>,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping")]
pub struct ModelInfo {
    pub id: Option<String>,
    pub input_cost_per_token: Option<UsdPerToken>,
    pub output_cost_per_token: Option<UsdPerToken>,
    /// A prompt token read from Claude's prompt cache.
    pub cache_read_input_token_cost: Option<UsdPerToken>,
    /// A prompt token written to Claude's prompt cache.
    pub cache_creation_input_token_cost: Option<UsdPerToken>,
    pub max_input_tokens: Option<Count>,
    pub max_output_tokens: Option<Count>,
    /// LiteLLM's older name for `max_output_tokens`.
    pub max_tokens: Option<Count>,
    pub mode: Option<Mode>,
    /// The model access groups the deployment's group belongs to: a key whose `models` names
    /// one may use every group in it.
    pub access_groups: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

/// What a deployment serves (`model_info.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Chat,
    Embedding,
    Completion,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Chat => "chat",
            Mode::Embedding => "embedding",
            Mode::Completion => "completion",
        }
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        [Mode::Chat, Mode::Embedding, Mode::Completion]
            .into_iter()
            .find(|mode| value.as_str() == Some(mode.as_str()))
            .ok_or_else(|| D::Error::custom(format!("{value} is not one of chat, embedding, completion")))
    }
}

/// `litellm_settings`. Retries and fallbacks repeat `router_settings`' names: LiteLLM reads both.
#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping")]
pub struct LitellmSettings {
    pub request_timeout: Option<Seconds>,
    pub drop_params: Option<bool>,
    pub num_retries: Option<Whole>,
    pub fallbacks: Option<Vec<FallbackRule>>,
    pub context_window_fallbacks: Option<Vec<FallbackRule>>,
    pub default_fallbacks: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping")]
pub struct RouterSettings {
    pub routing_strategy: Option<RoutingStrategy>,
    pub timeout: Option<Seconds>,
    pub allowed_fails: Option<Whole>,
    pub cooldown_time: Option<Seconds>,
    pub enable_pre_call_checks: Option<bool>,
    pub optional_pre_call_checks: Option<Vec<String>>,
    pub num_retries: Option<Whole>,
    pub fallbacks: Option<Vec<FallbackRule>>,
    pub context_window_fallbacks: Option<Vec<FallbackRule>>,
    pub default_fallbacks: Option<Vec<String>>,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

/// `router_settings.routing_strategy`, one the gateway serves; `usage-based-routing` (LiteLLM's
/// first version) is served by v2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RoutingStrategy(pub Strategy);

impl<'de> Deserialize<'de> for RoutingStrategy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let strategy = match value.as_str() {
            Some("simple-shuffle") => Strategy::SimpleShuffle,
            Some("least-busy") => Strategy::LeastBusy,
            Some("latency-based-routing") => Strategy::LatencyBasedRouting,
            Some("usage-based-routing-v2" | "usage-based-routing") => Strategy::UsageBasedRoutingV2,
            _ => {
                return Err(D::Error::custom(format!(
                    "{value} is not one of simple-shuffle, least-busy, latency-based-routing, usage-based-routing-v2"
                )))
            }
        };
        Ok(RoutingStrategy(strategy))
    }
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping")]
pub struct GeneralSettings {
    pub master_key: Option<EnvOrLiteral>,
    #[serde(flatten)]
    pub unknown: Map<String, Value>,
}

/// One item of a fallback list, `{group: [fallback, ...]}`: its pairs in file order.
#[derive(Debug)]
pub struct FallbackRule(pub Vec<(String, Vec<String>)>);

impl<'de> Deserialize<'de> for FallbackRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Pairs;
        impl<'de> Visitor<'de> for Pairs {
            type Value = FallbackRule;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping like {model: [fallback]}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FallbackRule, A::Error> {
                let mut pairs = Vec::new();
                while let Some(pair) = map.next_entry()? {
                    pairs.push(pair);
                }
                Ok(FallbackRule(pairs))
            }
        }
        deserializer.deserialize_map(Pairs)
    }
}

/// A field whose null is refused rather than read as absent: `#[serde(default, deserialize_with =
/// "present")]` leaves None only for a missing key.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// A string setting: a literal, or the name of an environment value (`os.environ/NAME`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvOrLiteral(pub ValueRef);

impl<'de> Deserialize<'de> for EnvOrLiteral {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = Value::deserialize(deserializer)?;
        match text.as_str() {
            Some(s) => value_ref(s).map(EnvOrLiteral).map_err(D::Error::custom),
            None => Err(D::Error::custom("must be a string")),
        }
    }
}

/// Reads `os.environ/NAME` (LiteLLM's form), `$NAME` or `${NAME}` (the seed's form), or a literal.
pub fn value_ref(text: &str) -> Result<ValueRef, String> {
    let s = text.trim();
    let name = if let Some(name) = s.strip_prefix("os.environ/") {
        Some(name)
    } else if let Some(rest) = s.strip_prefix('$') {
        match rest.strip_prefix('{') {
            Some(inner) => match inner.strip_suffix('}') {
                Some(name) => Some(name),
                None => return Err(format!("`{s}`: unknown env reference syntax (write ${{NAME}} or $NAME)")),
            },
            None => Some(rest),
        }
    } else {
        None
    };
    match name {
        None if s.is_empty() => Err("must not be empty".into()),
        None => Ok(ValueRef::Literal(s.to_string())),
        Some(name) if is_env_name(name) => Ok(ValueRef::Env(name.to_string())),
        Some(name) => Err(format!(
            "`{s}`: unknown env reference syntax: `{name}` is not a variable name (write os.environ/NAME or $NAME)"
        )),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `litellm_params.model`, `databricks/<endpoint>`: the serving endpoint's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatabricksEndpoint(pub String);

impl<'de> Deserialize<'de> for DatabricksEndpoint {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let model = match Value::deserialize(deserializer)? {
            Value::String(m) => m,
            _ => return Err(D::Error::custom("must be a string like `databricks/<endpoint>`")),
        };
        let endpoint = match model.split_once('/') {
            Some(("databricks", endpoint)) => endpoint,
            Some((prefix, _)) => {
                return Err(D::Error::custom(format!(
                    "unknown model prefix `{prefix}/`: only `databricks/<endpoint>` is supported"
                )))
            }
            None => {
                return Err(D::Error::custom(format!("`{model}` has no provider prefix: write `databricks/{model}`")))
            }
        };
        let is_name =
            !endpoint.is_empty() && endpoint.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !is_name {
            return Err(D::Error::custom(format!(
                "`{endpoint}` is not a serving endpoint name (letters, digits, `-`, `_`, `.`)"
            )));
        }
        Ok(DatabricksEndpoint(endpoint.to_string()))
    }
}

/// A number as LiteLLM configs write it: an int, a float, or the same in a string (quoted numbers
/// are common in copied configs). Infinities and NaN are refused.
fn number(value: &Value) -> Result<f64, String> {
    let parsed = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match parsed {
        Some(x) if x.is_finite() => Ok(x),
        _ => Err(match value {
            Value::String(s) => format!("bad number `{s}`"),
            other => format!("bad number `{other}`"),
        }),
    }
}

/// Reads a number (see [`number`]) and keeps it if `check` passes, else says what it must be.
fn checked_number<'de, D: Deserializer<'de>>(
    deserializer: D,
    check: fn(f64) -> bool,
    must: &str,
) -> Result<f64, D::Error> {
    let x = number(&Value::deserialize(deserializer)?).map_err(D::Error::custom)?;
    if check(x) {
        Ok(x)
    } else {
        Err(D::Error::custom(format!("bad number `{x}`: {must}")))
    }
}

/// Seconds, above 0 and at most a day.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Seconds(pub f64);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_number(deserializer, |s| s > 0.0 && s <= 86_400.0, "seconds must be above 0 and at most 86400")
            .map(Seconds)
    }
}

/// A whole number from 1 up to 10^12 (limits, sizes, order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = checked_number(
            deserializer,
            |n| n >= 1.0 && n.fract() == 0.0 && n <= 1e12,
            "must be a positive whole number",
        )?;
        Ok(Count(n as u64))
    }
}

/// A whole number, 0 or more (retries, allowed failures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Whole(pub u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let n = checked_number(deserializer, |n| n >= 0.0 && n.fract() == 0.0, "must be a whole number, 0 or more")?;
        Ok(Whole(n as u64))
    }
}

/// A price per token in US dollars, between 0 and 1.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UsdPerToken(pub f64);

impl<'de> Deserialize<'de> for UsdPerToken {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_number(deserializer, |usd| (0.0..=1.0).contains(&usd), "a price per token must be between 0 and 1 USD")
            .map(UsdPerToken)
    }
}

/// A `simple-shuffle` weight, above 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Weight(pub f64);

impl<'de> Deserialize<'de> for Weight {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        checked_number(deserializer, |w| w > 0.0, "must be above 0").map(Weight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read<T: for<'de> Deserialize<'de>>(value: Value) -> Result<T, String> {
        T::deserialize(value).map_err(|e| e.to_string())
    }

    #[test]
    fn braces_form_is_an_env_reference() {
        assert_eq!(value_ref("${X_1}"), Ok(ValueRef::Env("X_1".into())));
        assert_eq!(value_ref(" os.environ/X "), Ok(ValueRef::Env("X".into())));
        assert_eq!(value_ref(" sk-1 "), Ok(ValueRef::Literal("sk-1".into())), "literals are trimmed");
    }

    #[test]
    fn numbers_may_be_ints_floats_or_numeric_strings() {
        for (value, expected) in [
            (Value::from(2), 2.0),
            (Value::from(2.5), 2.5),
            (Value::from("2"), 2.0),
            (Value::from(" 1.5e-06 "), 1.5e-6),
            (Value::from("+.5"), 0.5),
        ] {
            assert_eq!(number(&value), Ok(expected), "{value}");
        }
        for (value, message) in [
            (Value::from("abc"), "bad number `abc`"),
            (Value::from("inf"), "bad number `inf`"),
            (Value::from("NaN"), "bad number `NaN`"),
            (Value::from("1e400"), "bad number `1e400`"),
            (Value::from(true), "bad number `true`"),
            (serde_json::json!([1]), "bad number `[1]`"),
            (serde_json::json!({"a": 1}), "bad number `{\"a\":1}`"),
        ] {
            assert_eq!(number(&value), Err(message.to_string()), "{value}");
        }
    }

    #[test]
    fn ranges_are_checked_with_their_reason() {
        assert_eq!(read::<Count>(Value::from("1e3")), Ok(Count(1000)));
        assert_eq!(read::<Count>(Value::from(1.0)), Ok(Count(1)));
        assert!(read::<Count>(Value::from(0)).unwrap_err().contains("must be a positive whole number"));
        assert!(read::<Count>(Value::from(1_000_000_000_001u64)).is_err());
        assert_eq!(read::<Whole>(Value::from(0)), Ok(Whole(0)));
        assert!(read::<Whole>(Value::from(1.5)).unwrap_err().contains("0 or more"));
        assert_eq!(read::<Seconds>(Value::from(86_400)), Ok(Seconds(86_400.0)));
        assert!(read::<Seconds>(Value::from(0)).unwrap_err().contains("above 0 and at most 86400"));
        assert_eq!(read::<UsdPerToken>(Value::from(1)), Ok(UsdPerToken(1.0)));
        assert!(read::<UsdPerToken>(Value::from(-1)).unwrap_err().contains("between 0 and 1 USD"));
        assert!(read::<Weight>(Value::from(0)).unwrap_err().contains("must be above 0"));
    }

    #[test]
    fn endpoints_need_the_databricks_prefix_and_a_plain_name() {
        assert_eq!(
            read::<DatabricksEndpoint>(Value::from("databricks/a.b_c-1")),
            Ok(DatabricksEndpoint("a.b_c-1".into()))
        );
        for (model, message) in [
            ("databricks/", "is not a serving endpoint name"),
            ("databricks/a/b", "is not a serving endpoint name"),
            ("openai/gpt-4o", "unknown model prefix `openai/`"),
            ("gpt-4o", "no provider prefix"),
        ] {
            assert!(read::<DatabricksEndpoint>(Value::from(model)).unwrap_err().contains(message), "{model}");
        }
    }
}
