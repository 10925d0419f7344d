//! The gateway's model config: LiteLLM's `litellm_config.yaml`, checked once at build time.
//!
//! `build.rs` includes this file, turns the YAML into a JSON value, calls [`parse`], fails the
//! build on any error (with the field's path) and embeds the typed result as JSON. The worker
//! only deserialises that JSON: no YAML parser ships in the wasm.
//!
//! This module depends on serde and serde_json alone, because build.rs compiles it too.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

// The file's typed shape, which build.rs will read it through. The path is spelled out because
// build.rs includes this file by path, where a bare `mod` would look for `src/litellm.rs`.
#[cfg(test)]
#[path = "config/litellm.rs"]
pub mod litellm;

/// LiteLLM's default request timeout, in seconds.
const DEFAULT_TIMEOUT_S: f64 = 600.0;
/// One US dollar in pico-dollars: Databricks' per-token prices are whole pico-dollars.
pub const PICO_PER_USD: f64 = 1e12;

/// A value written in the file, or the name of a worker var/secret read on each request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueRef {
    Literal(String),
    Env(String),
}

/// The validated config the worker runs with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatewayConfig {
    /// Every `model_list` entry, in file order. Entries sharing a `model_name` form a group.
    pub deployments: Vec<Deployment>,
    /// `general_settings.master_key`; `None` means no master key is configured.
    pub master_key: Option<ValueRef>,
    /// `router_settings.optional_pre_call_checks` has `enforce_model_rate_limits`: a
    /// deployment's `rpm` / `tpm` are hard limits.
    #[serde(default)]
    pub enforce_model_rate_limits: bool,
    #[serde(default)]
    pub router: RouterSettings,
    /// `litellm_settings.drop_params`: parameters Databricks does not take are removed.
    #[serde(default)]
    pub drop_params: bool,
}

/// How requests are spread over a group's deployments, retried and failed over
/// (`router_settings`, or LiteLLM's same names in `litellm_settings`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouterSettings {
    pub strategy: Strategy,
    /// Retries after the first attempt, within a group.
    pub num_retries: u32,
    /// Failures in a minute a deployment may have before it cools down.
    pub allowed_fails: u32,
    pub cooldown_ms: u64,
    /// Skip deployments whose `max_input_tokens` cannot hold the request.
    pub enable_pre_call_checks: bool,
    /// The most time one request may take over all its attempts (`router_settings.timeout`).
    pub timeout_ms: Option<u64>,
    /// Groups tried in order after a group's retries fail.
    pub fallbacks: Vec<(String, Vec<String>)>,
    /// Groups tried when a request is too long for a group's context window.
    pub context_window_fallbacks: Vec<(String, Vec<String>)>,
    /// Groups tried after any group without fallbacks of its own.
    pub default_fallbacks: Vec<String>,
}

impl Default for RouterSettings {
    fn default() -> Self {
        RouterSettings {
            strategy: Strategy::SimpleShuffle,
            num_retries: 3,
            allowed_fails: 3,
            cooldown_ms: 5_000,
            enable_pre_call_checks: false,
            timeout_ms: None,
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            default_fallbacks: Vec::new(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    SimpleShuffle,
    LeastBusy,
    LatencyBasedRouting,
    UsageBasedRoutingV2,
}

impl RouterSettings {
    /// The groups to try after `group` fails: its own fallbacks, else the default ones.
    pub fn fallbacks_for(&self, group: &str) -> &[String] {
        match self.fallbacks.iter().find(|(g, _)| g == group) {
            Some((_, list)) => list,
            None => &self.default_fallbacks,
        }
    }

    pub fn context_window_fallbacks_for(&self, group: &str) -> &[String] {
        self.context_window_fallbacks.iter().find(|(g, _)| g == group).map_or(&[], |(_, list)| list.as_slice())
    }
}

/// One `model_list` entry: a Databricks serving endpoint behind a public model name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    /// `model_info.id`, or a stable id derived from the entry's parameters.
    pub id: String,
    /// The name clients send (`model_name`).
    pub model_name: String,
    /// The Databricks serving endpoint (`litellm_params.model` after `databricks/`).
    pub endpoint: String,
    pub api_base: ValueRef,
    pub api_key: ValueRef,
    /// A service principal (`litellm_params.client_id` / `client_secret`): OAuth M2M tokens.
    #[serde(default)]
    pub oauth: Option<OAuthClient>,
    /// Limit for an answer (non-streaming) or for the first byte of a stream.
    pub timeout_ms: u64,
    /// Limit for the gap between two chunks of a stream.
    pub stream_timeout_ms: u64,
    /// Requests and tokens per minute (`litellm_params.rpm` / `tpm`).
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    /// `simple-shuffle` weight; `order`: lower is tried first.
    #[serde(default)]
    pub weight: Option<f64>,
    #[serde(default)]
    pub order: Option<u64>,
    pub info: ModelInfo,
}

/// A Databricks service principal's credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthClient {
    pub client_id: ValueRef,
    pub client_secret: ValueRef,
}

/// Prices and sizes of a deployment, from `model_info` (or `litellm_params`, as LiteLLM allows).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Pico-dollars per prompt token.
    pub input_cost_per_token: Option<u64>,
    /// Pico-dollars per completion token.
    pub output_cost_per_token: Option<u64>,
    pub max_input_tokens: Option<u64>,
    pub max_output_tokens: Option<u64>,
    pub mode: Option<String>,
}

#[cfg(test)]
impl Deployment {
    /// A deployment of endpoint `endpoint` (also its id) in group `g`, nothing else set.
    pub fn for_tests(endpoint: &str) -> Self {
        Deployment {
            id: endpoint.into(),
            model_name: "g".into(),
            endpoint: endpoint.into(),
            api_base: ValueRef::Env("DATABRICKS_API_BASE".into()),
            api_key: ValueRef::Env("DATABRICKS_TOKEN".into()),
            oauth: None,
            timeout_ms: 1000,
            stream_timeout_ms: 1000,
            rpm: None,
            tpm: None,
            weight: None,
            order: None,
            info: ModelInfo::default(),
        }
    }
}

impl GatewayConfig {
    /// The first deployment of the group `model_name`.
    pub fn deployment_for(&self, model_name: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.model_name == model_name)
    }

    /// Every deployment of the group `model_name`, in file order.
    pub fn group(&self, model_name: &str) -> Vec<&Deployment> {
        self.deployments.iter().filter(|d| d.model_name == model_name).collect()
    }

    /// The distinct public model names, in file order.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = Vec::new();
        for d in &self.deployments {
            if !names.contains(&d.model_name.as_str()) {
                names.push(&d.model_name);
            }
        }
        names
    }
}

/// An invalid config: `path` names the field (`model_list[2].litellm_params.model`).
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A config that parsed, with the settings it contains that the gateway does not act on.
#[derive(Debug)]
pub struct Parsed {
    pub config: GatewayConfig,
    pub warnings: Vec<String>,
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError { path: path.to_string(), message: message.into() })
}

/// Validates a LiteLLM config (already turned from YAML into a JSON value).
pub fn parse(doc: &Value) -> Result<Parsed, ConfigError> {
    let mut warnings = Vec::new();
    let root = as_object(doc, "(root)")?;
    for key in root.keys() {
        if !["model_list", "litellm_settings", "router_settings", "general_settings"].contains(&key.as_str()) {
            warnings.push(format!("{key}: not supported by the gateway; ignored"));
        }
    }

    let litellm = optional_object(root, "litellm_settings", "litellm_settings")?;
    let router = optional_object(root, "router_settings", "router_settings")?;
    let general = optional_object(root, "general_settings", "general_settings")?;
    const SHARED: [&str; 4] = ["num_retries", "fallbacks", "context_window_fallbacks", "default_fallbacks"];
    let litellm_known: Vec<&str> = ["request_timeout", "drop_params"].into_iter().chain(SHARED).collect();
    let router_known: Vec<&str> = [
        "timeout",
        "optional_pre_call_checks",
        "routing_strategy",
        "allowed_fails",
        "cooldown_time",
        "enable_pre_call_checks",
    ]
    .into_iter()
    .chain(SHARED)
    .collect();
    warn_unsupported(litellm, "litellm_settings", &litellm_known, &mut warnings);
    warn_unsupported(router, "router_settings", &router_known, &mut warnings);
    let enforce_model_rate_limits = pre_call_checks(router, &mut warnings)?;
    warn_unsupported(general, "general_settings", &["master_key"], &mut warnings);

    // Timeout precedence as LiteLLM: the deployment's own, then the router's, then the global one.
    let default_timeout_s = match positive_seconds(router, "timeout", "router_settings.timeout")? {
        Some(s) => s,
        None => positive_seconds(litellm, "request_timeout", "litellm_settings.request_timeout")?
            .unwrap_or(DEFAULT_TIMEOUT_S),
    };

    let master_key = match general.and_then(|g| g.get("master_key")) {
        None | Some(Value::Null) => None,
        Some(v) => {
            let path = "general_settings.master_key";
            let value = value_ref(v, path)?;
            if let ValueRef::Literal(k) = &value {
                if !k.starts_with("sk-") {
                    return err(path, "a master key must start with `sk-` (as in LiteLLM)");
                }
                warnings.push(format!(
                    "{path}: a literal key is built into the worker; prefer os.environ/LITELLM_MASTER_KEY"
                ));
            }
            Some(value)
        }
    };

    let list = match root.get("model_list") {
        Some(Value::Array(list)) if !list.is_empty() => list,
        Some(Value::Array(_)) => return err("model_list", "must list at least one model"),
        Some(_) => return err("model_list", "must be a list"),
        None => return err("model_list", "missing: the config must have a model_list"),
    };
    let mut deployments: Vec<Deployment> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let d = parse_deployment(entry, &format!("model_list[{i}]"), default_timeout_s, &mut warnings)?;
        if let Some(other) = deployments.iter().find(|o| o.id == d.id) {
            return err(
                &format!("model_list[{i}].model_info.id"),
                format!("`{}` is already the id of a deployment of `{}`; ids must be unique", d.id, other.model_name),
            );
        }
        deployments.push(d);
    }

    if !enforce_model_rate_limits {
        for d in deployments.iter().filter(|d| d.rpm.is_some() || d.tpm.is_some()) {
            warnings.push(format!(
                "model_list: `{}` sets rpm/tpm, which are hard limits only with router_settings.optional_pre_call_checks: [enforce_model_rate_limits]",
                d.model_name
            ));
        }
    }
    let router_settings = parse_router(litellm, router, &deployments)?;
    let drop_params = match litellm.and_then(|l| l.get("drop_params")) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return err("litellm_settings.drop_params", "must be true or false"),
    };
    let config =
        GatewayConfig { deployments, master_key, enforce_model_rate_limits, router: router_settings, drop_params };
    Ok(Parsed { config, warnings })
}

fn parse_deployment(
    entry: &Value,
    path: &str,
    default_timeout_s: f64,
    warnings: &mut Vec<String>,
) -> Result<Deployment, ConfigError> {
    let entry = as_object(entry, path)?;
    warn_unsupported(Some(entry), path, &["model_name", "litellm_params", "model_info"], warnings);

    let model_name = match entry.get("model_name") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => return err(&format!("{path}.model_name"), "must not be empty"),
        Some(_) => return err(&format!("{path}.model_name"), "must be a string"),
        None => return err(&format!("{path}.model_name"), "missing: every model needs the name clients send"),
    };
    if model_name.contains('*') {
        return err(&format!("{path}.model_name"), "wildcard model names are not supported");
    }

    let params_path = format!("{path}.litellm_params");
    let params = match entry.get("litellm_params") {
        Some(v) => as_object(v, &params_path)?,
        None => return err(&params_path, "missing: every model needs litellm_params.model"),
    };
    const PARAM_KEYS: [&str; 13] = [
        "model",
        "api_base",
        "api_key",
        "timeout",
        "stream_timeout",
        "input_cost_per_token",
        "output_cost_per_token",
        "rpm",
        "tpm",
        "weight",
        "order",
        "client_id",
        "client_secret",
    ];
    warn_unsupported(Some(params), &params_path, &PARAM_KEYS, warnings);

    let model_path = format!("{params_path}.model");
    let endpoint = match params.get("model") {
        Some(Value::String(m)) => match m.split_once('/') {
            Some(("databricks", endpoint)) => endpoint.to_string(),
            Some((prefix, _)) => {
                return err(
                    &model_path,
                    format!("unknown model prefix `{prefix}/`: only `databricks/<endpoint>` is supported"),
                )
            }
            None => return err(&model_path, format!("`{m}` has no provider prefix: write `databricks/{m}`")),
        },
        Some(_) => return err(&model_path, "must be a string like `databricks/<endpoint>`"),
        None => return err(&model_path, "missing: write `databricks/<endpoint>`"),
    };
    let endpoint_ok =
        !endpoint.is_empty() && endpoint.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if !endpoint_ok {
        return err(
            &model_path,
            format!("`{endpoint}` is not a serving endpoint name (letters, digits, `-`, `_`, `.`)"),
        );
    }

    let api_base = match params.get("api_base") {
        None | Some(Value::Null) => ValueRef::Env("DATABRICKS_API_BASE".into()),
        Some(v) => {
            let p = format!("{params_path}.api_base");
            let value = value_ref(v, &p)?;
            if let ValueRef::Literal(url) = &value {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return err(&p, format!("`{url}` is not an http(s) URL"));
                }
            }
            value
        }
    };
    let api_key = match params.get("api_key") {
        None | Some(Value::Null) => ValueRef::Env("DATABRICKS_TOKEN".into()),
        Some(v) => {
            let p = format!("{params_path}.api_key");
            let value = value_ref(v, &p)?;
            if matches!(value, ValueRef::Literal(_)) {
                warnings
                    .push(format!("{p}: a literal token is built into the worker; prefer os.environ/DATABRICKS_TOKEN"));
            }
            value
        }
    };

    let oauth = match (params.get("client_id"), params.get("client_secret")) {
        (None, None) => None,
        (Some(id), Some(secret)) => {
            let client_secret = value_ref(secret, &format!("{params_path}.client_secret"))?;
            if matches!(client_secret, ValueRef::Literal(_)) {
                warnings.push(format!(
                    "{params_path}.client_secret: a literal secret is built into the worker; prefer os.environ/DATABRICKS_CLIENT_SECRET"
                ));
            }
            Some(OAuthClient { client_id: value_ref(id, &format!("{params_path}.client_id"))?, client_secret })
        }
        (Some(_), None) => {
            return err(&format!("{params_path}.client_secret"), "missing: client_id needs client_secret")
        }
        (None, Some(_)) => return err(&format!("{params_path}.client_id"), "missing: client_secret needs client_id"),
    };

    let timeout_s =
        positive_seconds(Some(params), "timeout", &format!("{params_path}.timeout"))?.unwrap_or(default_timeout_s);
    let stream_timeout_s = positive_seconds(Some(params), "stream_timeout", &format!("{params_path}.stream_timeout"))?
        .unwrap_or(timeout_s);

    let info_path = format!("{path}.model_info");
    let info_obj = optional_object(entry, "model_info", &info_path)?;
    const INFO_KEYS: [&str; 7] = [
        "id",
        "input_cost_per_token",
        "output_cost_per_token",
        "max_input_tokens",
        "max_output_tokens",
        "max_tokens",
        "mode",
    ];
    warn_unsupported(info_obj, &info_path, &INFO_KEYS, warnings);

    // Prices may sit in model_info or litellm_params; model_info wins, as in LiteLLM.
    let price = |key: &str| -> Result<Option<u64>, ConfigError> {
        match price_per_token(info_obj, key, &format!("{info_path}.{key}"))? {
            Some(p) => Ok(Some(p)),
            None => price_per_token(Some(params), key, &format!("{params_path}.{key}")),
        }
    };
    let max_output_tokens = match count(info_obj, "max_output_tokens", &format!("{info_path}.max_output_tokens"))? {
        Some(n) => Some(n),
        None => count(info_obj, "max_tokens", &format!("{info_path}.max_tokens"))?,
    };
    let mode = match info_obj.and_then(|o| o.get("mode")) {
        None | Some(Value::Null) => None,
        Some(Value::String(m)) if ["chat", "embedding", "completion"].contains(&m.as_str()) => Some(m.clone()),
        Some(other) => {
            return err(&format!("{info_path}.mode"), format!("{other} is not one of chat, embedding, completion"))
        }
    };
    let info = ModelInfo {
        input_cost_per_token: price("input_cost_per_token")?,
        output_cost_per_token: price("output_cost_per_token")?,
        max_input_tokens: count(info_obj, "max_input_tokens", &format!("{info_path}.max_input_tokens"))?,
        max_output_tokens,
        mode,
    };

    let id = match info_obj.and_then(|o| o.get("id")) {
        None | Some(Value::Null) => generated_id(&model_name, &endpoint, &api_base),
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(_) => return err(&format!("{info_path}.id"), "must be a non-empty string"),
    };

    Ok(Deployment {
        id,
        model_name,
        endpoint,
        api_base,
        api_key,
        oauth,
        timeout_ms: (timeout_s * 1000.0).round() as u64,
        stream_timeout_ms: (stream_timeout_s * 1000.0).round() as u64,
        weight: match number(Some(params), "weight", &format!("{params_path}.weight"))? {
            Some(w) if w > 0.0 => Some(w),
            Some(w) => return err(&format!("{params_path}.weight"), format!("bad number `{w}`: must be above 0")),
            None => None,
        },
        order: count(Some(params), "order", &format!("{params_path}.order"))?,
        rpm: count(Some(params), "rpm", &format!("{params_path}.rpm"))?,
        tpm: count(Some(params), "tpm", &format!("{params_path}.tpm"))?,
        info,
    })
}

/// Router settings: `router_settings` wins over the same names in `litellm_settings`.
fn parse_router(
    litellm: Option<&Map<String, Value>>,
    router: Option<&Map<String, Value>>,
    deployments: &[Deployment],
) -> Result<RouterSettings, ConfigError> {
    let mut s = RouterSettings::default();
    let pick = |key: &str| -> (Option<&Map<String, Value>>, String) {
        match router.filter(|r| r.contains_key(key)) {
            Some(r) => (Some(r), format!("router_settings.{key}")),
            None => (litellm, format!("litellm_settings.{key}")),
        }
    };
    if let Some(v) = router.and_then(|r| r.get("routing_strategy")).filter(|v| !v.is_null()) {
        let path = "router_settings.routing_strategy";
        s.strategy = match v.as_str() {
            Some("simple-shuffle") => Strategy::SimpleShuffle,
            Some("least-busy") => Strategy::LeastBusy,
            Some("latency-based-routing") => Strategy::LatencyBasedRouting,
            Some("usage-based-routing-v2") | Some("usage-based-routing") => Strategy::UsageBasedRoutingV2,
            _ => {
                return err(
                    path,
                    format!(
                        "{v} is not one of simple-shuffle, least-busy, latency-based-routing, usage-based-routing-v2"
                    ),
                )
            }
        };
    }
    let (obj, path) = pick("num_retries");
    if let Some(n) = whole(obj, "num_retries", &path)? {
        s.num_retries = n.min(10) as u32;
    }
    if let Some(n) = whole(router, "allowed_fails", "router_settings.allowed_fails")? {
        s.allowed_fails = n.min(1000) as u32;
    }
    if let Some(secs) = positive_seconds(router, "cooldown_time", "router_settings.cooldown_time")? {
        s.cooldown_ms = (secs * 1000.0).round() as u64;
    }
    if let Some(secs) = positive_seconds(router, "timeout", "router_settings.timeout")? {
        s.timeout_ms = Some((secs * 1000.0).round() as u64);
    }
    match router.and_then(|r| r.get("enable_pre_call_checks")) {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => s.enable_pre_call_checks = *b,
        Some(_) => return err("router_settings.enable_pre_call_checks", "must be true or false"),
    }
    let group_exists = |name: &str| deployments.iter().any(|d| d.model_name == name);
    for (key, target) in
        [("fallbacks", &mut s.fallbacks), ("context_window_fallbacks", &mut s.context_window_fallbacks)]
    {
        let (obj, path) = pick(key);
        *target = fallback_list(obj.and_then(|o| o.get(key)), &path, &group_exists)?;
    }
    let (obj, path) = pick("default_fallbacks");
    s.default_fallbacks = match obj.and_then(|o| o.get("default_fallbacks")) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            items.iter().map(|v| group_name(v, &path, &group_exists)).collect::<Result<_, _>>()?
        }
        Some(_) => return err(&path, "must be a list of model names"),
    };
    Ok(s)
}

/// LiteLLM's `[{"group": ["fallback", ...]}, ...]`; every name must be a configured group.
fn fallback_list(
    value: Option<&Value>,
    path: &str,
    group_exists: &dyn Fn(&str) -> bool,
) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return err(path, "must be a list like [{model: [fallback]}]"),
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        for (group, targets) in as_object(item, &item_path)? {
            group_name(&Value::String(group.clone()), &item_path, group_exists)?;
            let targets_path = format!("{item_path}.{group}");
            let targets = match targets {
                Value::Array(t) => {
                    t.iter().map(|v| group_name(v, &targets_path, group_exists)).collect::<Result<Vec<_>, _>>()?
                }
                _ => return err(&targets_path, "must be a list of model names"),
            };
            out.push((group.clone(), targets));
        }
    }
    Ok(out)
}

fn group_name(value: &Value, path: &str, group_exists: &dyn Fn(&str) -> bool) -> Result<String, ConfigError> {
    match value.as_str() {
        Some(name) if group_exists(name) => Ok(name.to_string()),
        Some(name) => err(path, format!("`{name}` is not a model_name in model_list")),
        None => err(path, "must be a model name"),
    }
}

fn whole(obj: Option<&Map<String, Value>>, key: &str, path: &str) -> Result<Option<u64>, ConfigError> {
    match number(obj, key, path)? {
        Some(n) if n >= 0.0 && n.fract() == 0.0 => Ok(Some(n as u64)),
        Some(n) => err(path, format!("bad number `{n}`: must be a whole number, 0 or more")),
        None => Ok(None),
    }
}

/// `router_settings.optional_pre_call_checks`: true when it asks for `enforce_model_rate_limits`.
fn pre_call_checks(router: Option<&Map<String, Value>>, warnings: &mut Vec<String>) -> Result<bool, ConfigError> {
    let path = "router_settings.optional_pre_call_checks";
    match router.and_then(|r| r.get("optional_pre_call_checks")) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Array(checks)) => {
            let mut enforce = false;
            for check in checks {
                match check.as_str() {
                    Some("enforce_model_rate_limits") => enforce = true,
                    Some(other) => {
                        warnings.push(format!("{path}: `{other}` is not supported by the gateway yet; ignored"))
                    }
                    None => return err(path, "must be a list of check names"),
                }
            }
            Ok(enforce)
        }
        Some(_) => err(path, "must be a list of check names"),
    }
}

/// Reads `os.environ/NAME` (LiteLLM's form), `$NAME` or `${NAME}` (the seed's form), or a literal.
pub fn value_ref(v: &Value, path: &str) -> Result<ValueRef, ConfigError> {
    let s = match v {
        Value::String(s) => s.trim(),
        _ => return err(path, "must be a string"),
    };
    let name = if let Some(name) = s.strip_prefix("os.environ/") {
        Some(name)
    } else if let Some(rest) = s.strip_prefix('$') {
        match rest.strip_prefix('{') {
            Some(inner) => match inner.strip_suffix('}') {
                Some(name) => Some(name),
                None => return err(path, format!("`{s}`: unknown env reference syntax (write ${{NAME}} or $NAME)")),
            },
            None => Some(rest),
        }
    } else {
        None
    };
    match name {
        None if s.is_empty() => err(path, "must not be empty"),
        None => Ok(ValueRef::Literal(s.to_string())),
        Some(name) if is_env_name(name) => Ok(ValueRef::Env(name.to_string())),
        Some(name) => err(
            path,
            format!(
                "`{s}`: unknown env reference syntax: `{name}` is not a variable name (write os.environ/NAME or $NAME)"
            ),
        ),
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A stable id for a deployment without `model_info.id`: FNV-1a of what identifies it.
fn generated_id(model_name: &str, endpoint: &str, api_base: &ValueRef) -> String {
    let base = match api_base {
        ValueRef::Literal(s) => format!("literal:{s}"),
        ValueRef::Env(s) => format!("env:{s}"),
    };
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{model_name}\u{0}{endpoint}\u{0}{base}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

fn as_object<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, ConfigError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => err(path, "must be a mapping"),
    }
}

fn optional_object<'a>(
    parent: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<&'a Map<String, Value>>, ConfigError> {
    match parent.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => as_object(v, path).map(Some),
    }
}

fn warn_unsupported(obj: Option<&Map<String, Value>>, path: &str, known: &[&str], warnings: &mut Vec<String>) {
    for key in obj.into_iter().flat_map(|o| o.keys()) {
        if !known.contains(&key.as_str()) {
            warnings.push(format!("{path}.{key}: not supported by the gateway yet; ignored"));
        }
    }
}

fn number(obj: Option<&Map<String, Value>>, key: &str, path: &str) -> Result<Option<f64>, ConfigError> {
    match obj.and_then(|o| o.get(key)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(x) if x.is_finite() => Ok(Some(x)),
            _ => err(path, format!("bad number `{n}`")),
        },
        // YAML users write 1.5e-06 unquoted, but quoted numbers are common in copied configs.
        Some(Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Some(x)),
            _ => err(path, format!("bad number `{s}`")),
        },
        Some(other) => err(path, format!("bad number `{other}`")),
    }
}

fn positive_seconds(obj: Option<&Map<String, Value>>, key: &str, path: &str) -> Result<Option<f64>, ConfigError> {
    match number(obj, key, path)? {
        Some(s) if s > 0.0 && s <= 86_400.0 => Ok(Some(s)),
        Some(s) => err(path, format!("bad number `{s}`: seconds must be above 0 and at most 86400")),
        None => Ok(None),
    }
}

fn price_per_token(obj: Option<&Map<String, Value>>, key: &str, path: &str) -> Result<Option<u64>, ConfigError> {
    match number(obj, key, path)? {
        Some(usd) if (0.0..=1.0).contains(&usd) => Ok(Some((usd * PICO_PER_USD).round() as u64)),
        Some(usd) => err(path, format!("bad number `{usd}`: a price per token must be between 0 and 1 USD")),
        None => Ok(None),
    }
}

fn count(obj: Option<&Map<String, Value>>, key: &str, path: &str) -> Result<Option<u64>, ConfigError> {
    match number(obj, key, path)? {
        Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= 1e12 => Ok(Some(n as u64)),
        Some(n) => err(path, format!("bad number `{n}`: must be a positive whole number")),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_yaml(text: &str) -> Result<Parsed, ConfigError> {
        let doc: Value = serde_yaml::from_str(text).unwrap();
        parse(&doc)
    }

    fn error_of(text: &str) -> ConfigError {
        parse_yaml(text).unwrap_err()
    }

    const SEED: &str = r#"
model_list:
  - model_name: databricks-gpt-5-1
    litellm_params:
      model: databricks/databricks-gpt-5-1
      api_base: $DATABRICKS_API_BASE
      api_key: os.environ/DATABRICKS_TOKEN
general_settings:
  master_key: sk-1234
"#;

    #[test]
    fn seed_config_parses_with_both_env_forms() {
        let parsed = parse_yaml(SEED).unwrap();
        let d = &parsed.config.deployments[0];
        assert_eq!(d.model_name, "databricks-gpt-5-1");
        assert_eq!(d.endpoint, "databricks-gpt-5-1");
        assert_eq!(d.api_base, ValueRef::Env("DATABRICKS_API_BASE".into()));
        assert_eq!(d.api_key, ValueRef::Env("DATABRICKS_TOKEN".into()));
        assert_eq!(d.timeout_ms, 600_000);
        assert_eq!(parsed.config.master_key, Some(ValueRef::Literal("sk-1234".into())));
        assert!(parsed.warnings.iter().any(|w| w.contains("literal key")));
    }

    #[test]
    fn api_base_and_key_default_to_litellm_env_names() {
        let parsed = parse_yaml("model_list: [{model_name: m, litellm_params: {model: databricks/e}}]").unwrap();
        let d = &parsed.config.deployments[0];
        assert_eq!(d.api_base, ValueRef::Env("DATABRICKS_API_BASE".into()));
        assert_eq!(d.api_key, ValueRef::Env("DATABRICKS_TOKEN".into()));
        assert_eq!(parsed.config.master_key, None);
    }

    #[test]
    fn braces_form_is_an_env_reference() {
        assert_eq!(value_ref(&Value::from("${X_1}"), "p"), Ok(ValueRef::Env("X_1".into())));
    }

    #[test]
    fn malformed_env_references_name_the_field() {
        for bad in ["os.environ/", "os.environ/9X", "${X", "$", "$a-b", "os.environ/A B"] {
            let e = value_ref(&Value::from(bad), "model_list[0].litellm_params.api_key").unwrap_err();
            assert_eq!(e.path, "model_list[0].litellm_params.api_key");
            assert!(e.message.contains("env reference syntax"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn unknown_model_prefix_is_refused() {
        let e = error_of("model_list: [{model_name: m, litellm_params: {model: openai/gpt-4o}}]");
        assert_eq!(e.path, "model_list[0].litellm_params.model");
        assert!(e.message.contains("unknown model prefix `openai/`"));
        let e = error_of("model_list: [{model_name: m, litellm_params: {model: gpt-4o}}]");
        assert!(e.message.contains("no provider prefix"));
    }

    #[test]
    fn missing_model_name_is_refused_with_its_index() {
        let e = error_of(
            "model_list: [{model_name: a, litellm_params: {model: databricks/a}}, {litellm_params: {model: databricks/b}}]",
        );
        assert_eq!(e.path, "model_list[1].model_name");
        assert!(e.message.starts_with("missing"));
    }

    #[test]
    fn bad_numbers_are_refused() {
        let e = error_of("model_list: [{model_name: m, litellm_params: {model: databricks/e, timeout: abc}}]");
        assert_eq!(e.path, "model_list[0].litellm_params.timeout");
        assert!(e.message.contains("bad number"));
        let e = error_of("model_list: [{model_name: m, litellm_params: {model: databricks/e}, model_info: {input_cost_per_token: -1}}]");
        assert_eq!(e.path, "model_list[0].model_info.input_cost_per_token");
        let e = error_of(
            "model_list: [{model_name: m, litellm_params: {model: databricks/e}, model_info: {max_input_tokens: 1.5}}]",
        );
        assert_eq!(e.path, "model_list[0].model_info.max_input_tokens");
    }

    #[test]
    fn prices_are_exact_pico_dollars() {
        let parsed = parse_yaml(
            "model_list: [{model_name: m, litellm_params: {model: databricks/e}, model_info: {input_cost_per_token: 1.24999e-06, output_cost_per_token: '9.99999e-06'}}]",
        )
        .unwrap();
        let info = &parsed.config.deployments[0].info;
        assert_eq!(info.input_cost_per_token, Some(1_249_990));
        assert_eq!(info.output_cost_per_token, Some(9_999_990));
    }

    #[test]
    fn timeouts_follow_litellm_precedence() {
        let parsed = parse_yaml(
            "model_list: [{model_name: a, litellm_params: {model: databricks/a, timeout: 2, stream_timeout: 0.5}}, {model_name: b, litellm_params: {model: databricks/b}}]\nrouter_settings: {timeout: 30}\nlitellm_settings: {request_timeout: 60}",
        )
        .unwrap();
        let d = &parsed.config.deployments;
        assert_eq!((d[0].timeout_ms, d[0].stream_timeout_ms), (2000, 500));
        assert_eq!((d[1].timeout_ms, d[1].stream_timeout_ms), (30_000, 30_000));
    }

    #[test]
    fn unsupported_settings_are_reported_not_ignored() {
        let parsed = parse_yaml(
            "model_list: [{model_name: m, litellm_params: {model: databricks/e, seed: 2, rpm: 10}}]\nlitellm_settings: {set_verbose: true}\nrouter_settings: {redis_host: x}",
        )
        .unwrap();
        for field in
            ["litellm_params.seed", "litellm_settings.set_verbose", "router_settings.redis_host", "sets rpm/tpm"]
        {
            assert!(parsed.warnings.iter().any(|w| w.contains(field)), "no warning for {field}: {:?}", parsed.warnings);
        }
    }

    #[test]
    fn deployment_limits_are_hard_only_when_enforced() {
        let parsed = parse_yaml(
            "model_list: [{model_name: m, litellm_params: {model: databricks/e, rpm: 3, tpm: 1000}}]\nrouter_settings: {optional_pre_call_checks: [enforce_model_rate_limits]}",
        )
        .unwrap();
        assert!(parsed.config.enforce_model_rate_limits);
        assert_eq!((parsed.config.deployments[0].rpm, parsed.config.deployments[0].tpm), (Some(3), Some(1000)));
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        let e = error_of("model_list: [{model_name: m, litellm_params: {model: databricks/e, rpm: -3}}]");
        assert_eq!(e.path, "model_list[0].litellm_params.rpm");
    }

    #[test]
    fn router_settings_are_read_and_checked() {
        let parsed = parse_yaml(
            "model_list: [{model_name: a, litellm_params: {model: databricks/a, weight: 2, order: 1}}, {model_name: b, litellm_params: {model: databricks/b}}]\n\
             litellm_settings: {num_retries: 5, fallbacks: [{a: [b]}]}\n\
             router_settings: {routing_strategy: least-busy, num_retries: 1, allowed_fails: 4, cooldown_time: 0.5, enable_pre_call_checks: true, context_window_fallbacks: [{a: [b]}], default_fallbacks: [b]}",
        )
        .unwrap();
        let r = &parsed.config.router;
        assert_eq!(r.strategy, Strategy::LeastBusy);
        assert_eq!((r.num_retries, r.allowed_fails, r.cooldown_ms), (1, 4, 500), "router_settings wins");
        assert!(r.enable_pre_call_checks);
        assert_eq!(r.fallbacks_for("a"), ["b"], "litellm_settings.fallbacks are read too");
        assert_eq!(r.fallbacks_for("b"), ["b"], "default_fallbacks for groups without their own");
        assert_eq!(r.context_window_fallbacks_for("a"), ["b"]);
        let d = &parsed.config.deployments[0];
        assert_eq!((d.weight, d.order), (Some(2.0), Some(1)));
        let e = error_of("model_list: [{model_name: a, litellm_params: {model: databricks/a}}]\nrouter_settings: {fallbacks: [{a: [nope]}]}");
        assert_eq!(e.path, "router_settings.fallbacks[0].a");
        assert!(e.message.contains("`nope` is not a model_name"));
        let e = error_of("model_list: [{model_name: a, litellm_params: {model: databricks/a}}]\nrouter_settings: {routing_strategy: fastest}");
        assert_eq!(e.path, "router_settings.routing_strategy");
        let e = error_of("model_list: [{model_name: a, litellm_params: {model: databricks/a, weight: 0}}]");
        assert_eq!(e.path, "model_list[0].litellm_params.weight");
    }

    #[test]
    fn ids_are_stable_and_unique() {
        let text = "model_list: [{model_name: a, litellm_params: {model: databricks/a}}, {model_name: b, litellm_params: {model: databricks/a}}]";
        let one = parse_yaml(text).unwrap().config;
        let two = parse_yaml(text).unwrap().config;
        assert_eq!(one.deployments[0].id, two.deployments[0].id);
        assert_ne!(one.deployments[0].id, one.deployments[1].id);
        let e = error_of(
            "model_list: [{model_name: a, litellm_params: {model: databricks/a}, model_info: {id: x}}, {model_name: b, litellm_params: {model: databricks/b}, model_info: {id: x}}]",
        );
        assert_eq!(e.path, "model_list[1].model_info.id");
    }

    #[test]
    fn master_key_literal_must_look_like_a_key() {
        let e = error_of("model_list: [{model_name: m, litellm_params: {model: databricks/e}}]\ngeneral_settings: {master_key: hunter2}");
        assert_eq!(e.path, "general_settings.master_key");
    }

    #[test]
    fn model_names_are_distinct_and_ordered() {
        let parsed = parse_yaml(
            "model_list: [{model_name: b, litellm_params: {model: databricks/b}}, {model_name: a, litellm_params: {model: databricks/a}}, {model_name: b, litellm_params: {model: databricks/c}}]",
        )
        .unwrap();
        assert_eq!(parsed.config.model_names(), vec!["b", "a"]);
        assert_eq!(parsed.config.deployment_for("b").map(|d| d.endpoint.as_str()), Some("b"));
    }

    #[test]
    fn shipped_and_test_configs_are_valid() {
        for path in ["config/litellm_config.yaml", "tests/fixtures/litellm_config.yaml"] {
            let text = std::fs::read_to_string(path).unwrap();
            let parsed = parse_yaml(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(parsed.config.deployment_for("databricks-gpt-5-1").is_some(), "{path}");
            assert!(parsed.warnings.iter().all(|w| !w.contains("not supported")), "{path}: {:?}", parsed.warnings);
        }
        for (path, strategy) in [
            ("tests/fixtures/least_busy.yaml", Strategy::LeastBusy),
            ("tests/fixtures/latency.yaml", Strategy::LatencyBasedRouting),
        ] {
            let parsed = parse_yaml(&std::fs::read_to_string(path).unwrap()).unwrap();
            assert_eq!(parsed.config.router.strategy, strategy, "{path}");
        }
    }
}
