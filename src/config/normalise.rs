//! LiteLLM's config file turned into the gateway's [`GatewayConfig`], at build time.
//!
//! [`parse`] reads the file into the typed shape of `litellm` (an error there names the field
//! through `serde_path_to_error`), then checks what needs more than one value (required fields,
//! ids, fallback groups), fills in LiteLLM's defaults and lists the settings the gateway does not
//! act on as warnings.
//!
//! Like `litellm`, only build.rs and the tests compile this module. It names `litellm` as
//! `super::litellm` and the normalised types as `crate::config`: both hold in either crate.

use serde_json::{Map, Value};

use super::litellm::{self, FallbackRule, LitellmParams, ModelEntry};
use crate::config::{
    AccessGroup, Deployment, GatewayConfig, ModelInfo, OAuthClient, RouterSettings, ValueRef, ALL_MODELS,
};
use crate::money::Money;

/// LiteLLM's default request timeout, in seconds.
const DEFAULT_TIMEOUT_S: f64 = 600.0;

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
    let file: litellm::LitellmConfig = serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        // serde_path_to_error writes the document itself as ".".
        let path = if path == "." { "(root)".to_string() } else { path };
        ConfigError { path, message: e.into_inner().to_string() }
    })?;

    let mut warnings = Vec::new();
    for key in file.unknown.keys() {
        warnings.push(format!("{key}: not supported by the gateway; ignored"));
    }
    let litellm = file.litellm_settings.as_ref();
    let router = file.router_settings.as_ref();
    warn_unknown(litellm.map(|l| &l.unknown), "litellm_settings", &mut warnings);
    warn_unknown(router.map(|r| &r.unknown), "router_settings", &mut warnings);
    let mut enforce_model_rate_limits = false;
    for check in router.and_then(|r| r.optional_pre_call_checks.as_ref()).into_iter().flatten() {
        match check.as_str() {
            "enforce_model_rate_limits" => enforce_model_rate_limits = true,
            other => warnings.push(format!(
                "router_settings.optional_pre_call_checks: `{other}` is not supported by the gateway yet; ignored"
            )),
        }
    }
    let general = file.general_settings.as_ref();
    warn_unknown(general.map(|g| &g.unknown), "general_settings", &mut warnings);

    // Timeout precedence as LiteLLM: the deployment's own, then the router's, then the global one.
    let default_timeout_s =
        router.and_then(|r| r.timeout).or(litellm.and_then(|l| l.request_timeout)).map_or(DEFAULT_TIMEOUT_S, |s| s.0);

    let master_key = match general.and_then(|g| g.master_key.clone()) {
        None => None,
        Some(litellm::EnvOrLiteral(value)) => {
            let path = "general_settings.master_key";
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

    let list = match &file.model_list {
        Some(list) if !list.is_empty() => list,
        Some(_) => return err("model_list", "must list at least one model"),
        None => return err("model_list", "missing: the config must have a model_list"),
    };
    let mut deployments: Vec<Deployment> = Vec::with_capacity(list.len());
    for (i, entry) in list.iter().enumerate() {
        let d = deployment(entry, &format!("model_list[{i}]"), default_timeout_s, &mut warnings)?;
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
    let router_settings = router_settings(litellm, router, &deployments)?;
    let drop_params = litellm.and_then(|l| l.drop_params).unwrap_or(false);
    let access_groups = access_groups(list, &deployments, &mut warnings)?;
    let config = GatewayConfig {
        deployments,
        master_key,
        enforce_model_rate_limits,
        router: router_settings,
        drop_params,
        access_groups,
    };
    Ok(Parsed { config, warnings })
}

fn deployment(
    entry: &ModelEntry,
    path: &str,
    default_timeout_s: f64,
    warnings: &mut Vec<String>,
) -> Result<Deployment, ConfigError> {
    warn_unknown(Some(&entry.unknown), path, warnings);

    let name_path = format!("{path}.model_name");
    let model_name = match &entry.model_name {
        Some(s) if s.trim().is_empty() => return err(&name_path, "must not be empty"),
        Some(s) if s.contains('*') => return err(&name_path, "wildcard model names are not supported"),
        Some(s) => s.clone(),
        None => return err(&name_path, "missing: every model needs the name clients send"),
    };

    let params_path = format!("{path}.litellm_params");
    let params: &LitellmParams = match &entry.litellm_params {
        Some(params) => params,
        None => return err(&params_path, "missing: every model needs litellm_params.model"),
    };
    warn_unknown(Some(&params.unknown), &params_path, warnings);
    let endpoint = match &params.model {
        Some(litellm::DatabricksEndpoint(endpoint)) => endpoint.clone(),
        None => return err(&format!("{params_path}.model"), "missing: write `databricks/<endpoint>`"),
    };

    let api_base = match &params.api_base {
        None => ValueRef::Env("DATABRICKS_API_BASE".into()),
        Some(litellm::EnvOrLiteral(value)) => {
            if let ValueRef::Literal(url) = value {
                if !(url.starts_with("https://") || url.starts_with("http://")) {
                    return err(&format!("{params_path}.api_base"), format!("`{url}` is not an http(s) URL"));
                }
            }
            value.clone()
        }
    };
    let api_key = match &params.api_key {
        None => ValueRef::Env("DATABRICKS_TOKEN".into()),
        Some(litellm::EnvOrLiteral(value)) => {
            if matches!(value, ValueRef::Literal(_)) {
                warnings.push(format!(
                    "{params_path}.api_key: a literal token is built into the worker; prefer os.environ/DATABRICKS_TOKEN"
                ));
            }
            value.clone()
        }
    };

    let oauth = match (&params.client_id, &params.client_secret) {
        (None, None) => None,
        (Some(id), Some(secret)) => {
            if matches!(secret.0, ValueRef::Literal(_)) {
                warnings.push(format!(
                    "{params_path}.client_secret: a literal secret is built into the worker; prefer os.environ/DATABRICKS_CLIENT_SECRET"
                ));
            }
            Some(OAuthClient { client_id: id.0.clone(), client_secret: secret.0.clone() })
        }
        (Some(_), None) => {
            return err(&format!("{params_path}.client_secret"), "missing: client_id needs client_secret")
        }
        (None, Some(_)) => return err(&format!("{params_path}.client_id"), "missing: client_secret needs client_id"),
    };

    let timeout_s = params.timeout.map_or(default_timeout_s, |s| s.0);
    let stream_timeout_s = params.stream_timeout.map_or(timeout_s, |s| s.0);

    let info_path = format!("{path}.model_info");
    let info = entry.model_info.as_ref();
    warn_unknown(info.map(|i| &i.unknown), &info_path, warnings);
    let id = match info.and_then(|i| i.id.as_ref()) {
        None => generated_id(&model_name, &endpoint, &api_base),
        Some(id) if id.trim().is_empty() => return err(&format!("{info_path}.id"), "must be a non-empty string"),
        Some(id) => id.clone(),
    };
    // Prices may sit in model_info or litellm_params; model_info wins, as in LiteLLM.
    let pico = |price: Option<litellm::UsdPerToken>| price.and_then(|usd| Money::from_usd(usd.0));
    let info = ModelInfo {
        input_cost_per_token: pico(info.and_then(|i| i.input_cost_per_token).or(params.input_cost_per_token)),
        output_cost_per_token: pico(info.and_then(|i| i.output_cost_per_token).or(params.output_cost_per_token)),
        cache_read_input_token_cost: pico(
            info.and_then(|i| i.cache_read_input_token_cost).or(params.cache_read_input_token_cost),
        ),
        cache_creation_input_token_cost: pico(
            info.and_then(|i| i.cache_creation_input_token_cost).or(params.cache_creation_input_token_cost),
        ),
        max_input_tokens: info.and_then(|i| i.max_input_tokens).map(|n| n.0),
        max_output_tokens: info.and_then(|i| i.max_output_tokens.or(i.max_tokens)).map(|n| n.0),
        mode: info.and_then(|i| i.mode).map(|m| m.as_str().to_string()),
    };

    Ok(Deployment {
        id,
        model_name,
        endpoint,
        api_base,
        api_key,
        oauth,
        timeout_ms: millis(timeout_s),
        stream_timeout_ms: millis(stream_timeout_s),
        rpm: params.rpm.map(|n| n.0),
        tpm: params.tpm.map(|n| n.0),
        weight: params.weight.map(|w| w.0),
        order: params.order.map(|n| n.0),
        info,
    })
}

/// The access groups of `model_info.access_groups`, each with the model groups in it. A group
/// is in an access group when any of its deployments names it (as LiteLLM): the router may send
/// its requests to any of them.
fn access_groups(
    list: &[ModelEntry],
    deployments: &[Deployment],
    warnings: &mut Vec<String>,
) -> Result<Vec<AccessGroup>, ConfigError> {
    let mut groups: Vec<AccessGroup> = Vec::new();
    for (i, (entry, d)) in list.iter().zip(deployments).enumerate() {
        let Some(names) = entry.model_info.as_ref().and_then(|info| info.access_groups.as_ref()) else { continue };
        let path = format!("model_list[{i}].model_info.access_groups");
        if names.is_empty() {
            warnings.push(format!("{path}: an empty list puts `{}` in no access group", d.model_name));
        }
        for (j, name) in names.iter().enumerate() {
            let name_path = format!("{path}[{j}]");
            let name = name.trim();
            if name.is_empty() {
                return err(&name_path, "an access group needs a name");
            }
            if name == ALL_MODELS {
                return err(&name_path, format!("`{ALL_MODELS}` already means every model; name the group otherwise"));
            }
            if names[..j].iter().any(|n| n.trim() == name) {
                warnings.push(format!("{name_path}: `{name}` is listed twice"));
                continue;
            }
            match groups.iter_mut().find(|g| g.name == name) {
                Some(g) if g.models.contains(&d.model_name) => {}
                Some(g) => g.models.push(d.model_name.clone()),
                None => groups.push(AccessGroup { name: name.to_string(), models: vec![d.model_name.clone()] }),
            }
        }
    }
    for g in &groups {
        if deployments.iter().any(|d| d.model_name == g.name) {
            warnings.push(format!(
                "model_info.access_groups: `{}` is also a model_name; a key listing it may use that model and every model of the access group",
                g.name
            ));
        }
        // A group some of whose deployments do not name the access group is in it all the same.
        for model in &g.models {
            let unnamed = list.iter().zip(deployments).enumerate().find(|(_, (entry, d))| {
                &d.model_name == model
                    && !entry
                        .model_info
                        .as_ref()
                        .and_then(|info| info.access_groups.as_ref())
                        .is_some_and(|names| names.iter().any(|n| n.trim() == g.name))
            });
            if let Some((i, _)) = unnamed {
                warnings.push(format!(
                    "model_list[{i}].model_info.access_groups: does not name `{}`, which another deployment of `{model}` names; the whole group is in it",
                    g.name
                ));
            }
        }
    }
    Ok(groups)
}

/// Router settings: `router_settings` wins over the same names in `litellm_settings`.
fn router_settings(
    litellm: Option<&litellm::LitellmSettings>,
    router: Option<&litellm::RouterSettings>,
    deployments: &[Deployment],
) -> Result<RouterSettings, ConfigError> {
    let mut s = RouterSettings::default();
    if let Some(strategy) = router.and_then(|r| r.routing_strategy) {
        s.strategy = strategy.0;
    }
    if let Some(n) = router.and_then(|r| r.num_retries).or(litellm.and_then(|l| l.num_retries)) {
        s.num_retries = n.0.min(10) as u32;
    }
    if let Some(n) = router.and_then(|r| r.allowed_fails) {
        s.allowed_fails = n.0.min(1000) as u32;
    }
    if let Some(secs) = router.and_then(|r| r.cooldown_time) {
        s.cooldown_ms = millis(secs.0);
    }
    s.timeout_ms = router.and_then(|r| r.timeout).map(|secs| millis(secs.0));
    if let Some(on) = router.and_then(|r| r.enable_pre_call_checks) {
        s.enable_pre_call_checks = on;
    }

    let groups = Groups(deployments);
    let (rules, path) =
        shared(router.and_then(|r| r.fallbacks.as_ref()), litellm.and_then(|l| l.fallbacks.as_ref()), "fallbacks");
    s.fallbacks = groups.fallbacks(rules, &path)?;
    let (rules, path) = shared(
        router.and_then(|r| r.context_window_fallbacks.as_ref()),
        litellm.and_then(|l| l.context_window_fallbacks.as_ref()),
        "context_window_fallbacks",
    );
    s.context_window_fallbacks = groups.fallbacks(rules, &path)?;
    let (names, path) = shared(
        router.and_then(|r| r.default_fallbacks.as_ref()),
        litellm.and_then(|l| l.default_fallbacks.as_ref()),
        "default_fallbacks",
    );
    s.default_fallbacks =
        names.into_iter().flatten().map(|name| groups.check(name, &path)).collect::<Result<_, _>>()?;
    Ok(s)
}

/// A setting both sections may hold, with the path of the one read: `router_settings` wins.
fn shared<'a, T>(from_router: Option<&'a T>, from_litellm: Option<&'a T>, key: &str) -> (Option<&'a T>, String) {
    match from_router {
        Some(value) => (Some(value), format!("router_settings.{key}")),
        None => (from_litellm, format!("litellm_settings.{key}")),
    }
}

/// The configured model groups, against which fallback lists are checked.
struct Groups<'a>(&'a [Deployment]);

impl Groups<'_> {
    fn check(&self, name: &str, path: &str) -> Result<String, ConfigError> {
        if self.0.iter().any(|d| d.model_name == name) {
            Ok(name.to_string())
        } else {
            err(path, format!("`{name}` is not a model_name in model_list"))
        }
    }

    /// LiteLLM's `[{"group": ["fallback", ...]}, ...]`, flattened in file order.
    fn fallbacks(
        &self,
        rules: Option<&Vec<FallbackRule>>,
        path: &str,
    ) -> Result<Vec<(String, Vec<String>)>, ConfigError> {
        let mut out = Vec::new();
        for (i, FallbackRule(pairs)) in rules.into_iter().flatten().enumerate() {
            let rule_path = format!("{path}[{i}]");
            for (group, targets) in pairs {
                self.check(group, &rule_path)?;
                let targets_path = format!("{rule_path}.{group}");
                let targets = targets.iter().map(|t| self.check(t, &targets_path)).collect::<Result<_, _>>()?;
                out.push((group.clone(), targets));
            }
        }
        Ok(out)
    }
}

fn millis(seconds: f64) -> u64 {
    (seconds * 1000.0).round() as u64
}

fn warn_unknown(unknown: Option<&Map<String, Value>>, path: &str, warnings: &mut Vec<String>) {
    for key in unknown.into_iter().flat_map(|u| u.keys()) {
        warnings.push(format!("{path}.{key}: not supported by the gateway yet; ignored"));
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Strategy;

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
    fn malformed_env_references_name_the_field() {
        for bad in ["os.environ/", "os.environ/9X", "${X", "$", "$a-b", "os.environ/A B"] {
            let e = error_of(&format!(
                "model_list: [{{model_name: m, litellm_params: {{model: databricks/e, api_key: '{bad}'}}}}]"
            ));
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
        assert_eq!(info.input_cost_per_token, Some(crate::money::Money::from_pico(1_249_990)));
        assert_eq!(info.output_cost_per_token, Some(crate::money::Money::from_pico(9_999_990)));
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

    #[test]
    fn errors_name_the_field_at_any_depth() {
        for (yaml, path, message) in [
            ("[]", "(root)", "expected a mapping"),
            ("model_list: null", "model_list", "expected a sequence"),
            ("model_list: [3]", "model_list[0]", "expected a mapping"),
            (
                "model_list: [{model_name: a, litellm_params: {model: databricks/a}}, {model_name: b, litellm_params: {model: databricks/b, rpm: lots}}]",
                "model_list[1].litellm_params.rpm",
                "bad number `lots`",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: databricks/a}, model_info: 3}]",
                "model_list[0].model_info",
                "expected a mapping",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: databricks/a}, model_info: {mode: image}}]",
                "model_list[0].model_info.mode",
                "is not one of chat, embedding, completion",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: databricks/a}}]\nrouter_settings: {fallbacks: [{a: [3]}]}",
                "router_settings.fallbacks[0].a[0]",
                "expected a string",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: databricks/a}}]\nlitellm_settings: {drop_params: 'yes'}",
                "litellm_settings.drop_params",
                "expected a boolean",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: databricks/a}}]\ngeneral_settings: {master_key: 'os.environ/'}",
                "general_settings.master_key",
                "env reference syntax",
            ),
            (
                "model_list: [{model_name: a, litellm_params: {model: databricks/a, api_base: 'ftp://x'}}]",
                "model_list[0].litellm_params.api_base",
                "is not an http(s) URL",
            ),
            (
                "model_list: [{model_name: 'a*', litellm_params: {model: databricks/a}}]",
                "model_list[0].model_name",
                "wildcard",
            ),
            ("model_list: [{model_name: a}]", "model_list[0].litellm_params", "missing"),
            ("model_list: [{model_name: a, litellm_params: {}}]", "model_list[0].litellm_params.model", "missing"),
            ("model_list: []", "model_list", "at least one model"),
            ("general_settings: {}", "model_list", "missing"),
        ] {
            let e = error_of(yaml);
            assert_eq!(e.path, path, "{yaml}: {e}");
            assert!(e.message.contains(message), "{yaml}: {e}");
        }
    }

    #[test]
    fn warnings_name_every_ignored_setting_in_file_order() {
        let parsed = parse_yaml(
            "model_list:\n\
             - model_name: a\n  litellm_params: {model: databricks/a, seed: 1, api_key: dapi1, client_id: c, client_secret: s}\n  extra: 1\n  model_info: {base_model: x, input_cost_per_token: 1e-6}\n\
             - model_name: b\n  litellm_params: {model: databricks/b, tpm: 10}\n\
             router_settings: {redis_host: x, optional_pre_call_checks: [prompt_caching]}\n\
             litellm_settings: {set_verbose: true, callbacks: [x]}\n\
             general_settings: {master_key: sk-1, database_url: x}\n\
             environment_variables: {A: b}",
        )
        .unwrap();
        assert_eq!(
            parsed.warnings,
            [
                "environment_variables: not supported by the gateway; ignored",
                "litellm_settings.set_verbose: not supported by the gateway yet; ignored",
                "litellm_settings.callbacks: not supported by the gateway yet; ignored",
                "router_settings.redis_host: not supported by the gateway yet; ignored",
                "router_settings.optional_pre_call_checks: `prompt_caching` is not supported by the gateway yet; ignored",
                "general_settings.database_url: not supported by the gateway yet; ignored",
                "general_settings.master_key: a literal key is built into the worker; prefer os.environ/LITELLM_MASTER_KEY",
                "model_list[0].extra: not supported by the gateway yet; ignored",
                "model_list[0].litellm_params.seed: not supported by the gateway yet; ignored",
                "model_list[0].litellm_params.api_key: a literal token is built into the worker; prefer os.environ/DATABRICKS_TOKEN",
                "model_list[0].litellm_params.client_secret: a literal secret is built into the worker; prefer os.environ/DATABRICKS_CLIENT_SECRET",
                "model_list[0].model_info.base_model: not supported by the gateway yet; ignored",
                "model_list: `b` sets rpm/tpm, which are hard limits only with router_settings.optional_pre_call_checks: [enforce_model_rate_limits]",
            ]
        );
    }

    #[test]
    fn numbers_may_be_ints_floats_or_numeric_strings() {
        let parsed = parse_yaml(
            "model_list: [{model_name: a, litellm_params: {model: databricks/a, rpm: '5', tpm: 1e3, timeout: ' 1.5 ', weight: '0.5', order: 2.0}, model_info: {max_input_tokens: '100', max_tokens: 7}}]\n\
             router_settings: {cooldown_time: '2', allowed_fails: '0', num_retries: 2.0}",
        )
        .unwrap();
        let d = &parsed.config.deployments[0];
        assert_eq!((d.rpm, d.tpm, d.timeout_ms, d.weight, d.order), (Some(5), Some(1000), 1500, Some(0.5), Some(2)));
        assert_eq!((d.info.max_input_tokens, d.info.max_output_tokens), (Some(100), Some(7)));
        let r = &parsed.config.router;
        assert_eq!((r.cooldown_ms, r.allowed_fails, r.num_retries), (2000, 0, 2));
        for bad in ["2.5", "'abc'", "true", "[1]", "'inf'", "0", "-1"] {
            let e = error_of(&format!(
                "model_list: [{{model_name: a, litellm_params: {{model: databricks/a, rpm: {bad}}}}}]"
            ));
            assert_eq!(e.path, "model_list[0].litellm_params.rpm", "{bad}");
            assert!(e.message.starts_with("bad number"), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn null_is_absent_except_where_a_value_is_required() {
        let parsed = parse_yaml(
            "model_list: [{model_name: a, litellm_params: {model: databricks/a, api_base: null, api_key: null, rpm: null}, model_info: null}]\n\
             litellm_settings: null\nrouter_settings: {routing_strategy: null, timeout: null}\ngeneral_settings: {master_key: null}",
        )
        .unwrap();
        let d = &parsed.config.deployments[0];
        assert_eq!(d.api_base, ValueRef::Env("DATABRICKS_API_BASE".into()));
        assert_eq!((d.rpm, d.timeout_ms), (None, 600_000));
        assert_eq!(parsed.config.master_key, None);
        for (yaml, path) in [
            ("model_list: [{model_name: null, litellm_params: {model: databricks/a}}]", "model_list[0].model_name"),
            ("model_list: [{model_name: a, litellm_params: null}]", "model_list[0].litellm_params"),
            ("model_list: [{model_name: a, litellm_params: {model: null}}]", "model_list[0].litellm_params.model"),
            (
                "model_list: [{model_name: a, litellm_params: {model: databricks/a, client_id: null, client_secret: s}}]",
                "model_list[0].litellm_params.client_id",
            ),
        ] {
            assert_eq!(error_of(yaml).path, path, "{yaml}");
        }
    }

    #[test]
    fn a_service_principal_needs_both_halves() {
        let parsed = parse_yaml(
            "model_list: [{model_name: a, litellm_params: {model: databricks/a, client_id: os.environ/ID, client_secret: os.environ/SECRET}}]",
        )
        .unwrap();
        let oauth = parsed.config.deployments[0].oauth.clone().unwrap();
        assert_eq!(oauth.client_id, ValueRef::Env("ID".into()));
        assert_eq!(oauth.client_secret, ValueRef::Env("SECRET".into()));
        let e = error_of("model_list: [{model_name: a, litellm_params: {model: databricks/a, client_id: x}}]");
        assert_eq!(e.path, "model_list[0].litellm_params.client_secret");
        let e = error_of("model_list: [{model_name: a, litellm_params: {model: databricks/a, client_secret: x}}]");
        assert_eq!(e.path, "model_list[0].litellm_params.client_id");
    }

    #[test]
    fn shared_router_settings_come_from_one_section_and_both_are_checked() {
        let two = "model_list: [{model_name: a, litellm_params: {model: databricks/a}}, {model_name: b, litellm_params: {model: databricks/b}}]\n";
        let parsed = parse_yaml(&format!(
            "{two}litellm_settings: {{num_retries: 5, fallbacks: [{{a: [b]}}]}}\nrouter_settings: {{num_retries: null, fallbacks: [{{b: [a]}}]}}"
        ))
        .unwrap();
        let r = &parsed.config.router;
        assert_eq!(r.num_retries, 5, "a null in router_settings leaves litellm_settings' value");
        assert_eq!(r.fallbacks, [("b".to_string(), vec!["a".to_string()])], "router_settings' list, not both");
        // The section not read is still checked for its types, though not for its group names.
        let e = error_of(&format!("{two}litellm_settings: {{num_retries: abc}}\nrouter_settings: {{num_retries: 1}}"));
        assert_eq!(e.path, "litellm_settings.num_retries");
        assert!(parse_yaml(&format!(
            "{two}litellm_settings: {{fallbacks: [{{a: [nope]}}]}}\nrouter_settings: {{fallbacks: []}}"
        ))
        .is_ok());
        let e = error_of(&format!("{two}litellm_settings: {{context_window_fallbacks: [{{a: [b]}}, {{b: [nope]}}]}}"));
        assert_eq!(e.path, "litellm_settings.context_window_fallbacks[1].b");
    }

    #[test]
    fn the_embedded_json_keeps_its_shape() {
        let parsed = parse_yaml(
            "model_list:\n\
             - model_name: a\n  litellm_params: {model: databricks/e1, api_base: 'https://x', api_key: os.environ/T, client_id: i, client_secret: os.environ/S, timeout: 2, rpm: 3, weight: 1.5, order: 1}\n  model_info: {id: a1, input_cost_per_token: 1.5e-06, output_cost_per_token: '2e-06', max_input_tokens: 10, max_tokens: 20, mode: chat}\n\
             - model_name: b\n  litellm_params: {model: databricks/e2}\n\
             router_settings: {routing_strategy: usage-based-routing, num_retries: 20, allowed_fails: 2, cooldown_time: 1, timeout: 9, enable_pre_call_checks: true, optional_pre_call_checks: [enforce_model_rate_limits], fallbacks: [{a: [b]}], context_window_fallbacks: [{b: [a]}], default_fallbacks: [b]}\n\
             litellm_settings: {drop_params: true, request_timeout: 60}\n\
             general_settings: {master_key: os.environ/MK}",
        )
        .unwrap();
        let expected = serde_json::json!({
            "deployments": [
                {
                    "id": "a1", "model_name": "a", "endpoint": "e1",
                    "api_base": {"literal": "https://x"}, "api_key": {"env": "T"},
                    "oauth": {"client_id": {"literal": "i"}, "client_secret": {"env": "S"}},
                    "timeout_ms": 2000, "stream_timeout_ms": 2000, "rpm": 3, "tpm": null, "weight": 1.5, "order": 1,
                    "info": {"input_cost_per_token": 1_500_000, "output_cost_per_token": 2_000_000,
                             "max_input_tokens": 10, "max_output_tokens": 20, "mode": "chat"}
                },
                {
                    "id": "43a3ef5984d96a1a", "model_name": "b", "endpoint": "e2",
                    "api_base": {"env": "DATABRICKS_API_BASE"}, "api_key": {"env": "DATABRICKS_TOKEN"}, "oauth": null,
                    "timeout_ms": 9000, "stream_timeout_ms": 9000, "rpm": null, "tpm": null, "weight": null, "order": null,
                    "info": {"input_cost_per_token": null, "output_cost_per_token": null,
                             "max_input_tokens": null, "max_output_tokens": null, "mode": null}
                }
            ],
            "master_key": {"env": "MK"},
            "enforce_model_rate_limits": true,
            "router": {
                "strategy": "usage-based-routing-v2", "num_retries": 10, "allowed_fails": 2, "cooldown_ms": 1000,
                "enable_pre_call_checks": true, "timeout_ms": 9000,
                "fallbacks": [["a", ["b"]]], "context_window_fallbacks": [["b", ["a"]]], "default_fallbacks": ["b"]
            },
            "drop_params": true
        });
        assert_eq!(serde_json::to_value(&parsed.config).unwrap(), expected);
    }

    #[test]
    fn access_groups_gather_the_groups_that_name_them() {
        let parsed = parse_yaml(
            "model_list:\n\
             - {model_name: a, litellm_params: {model: databricks/a}, model_info: {access_groups: [beta, ' cheap ']}}\n\
             - {model_name: b, litellm_params: {model: databricks/b}, model_info: {access_groups: [cheap]}}\n\
             - {model_name: b, litellm_params: {model: databricks/b2}, model_info: {access_groups: [cheap]}}\n\
             - {model_name: c, litellm_params: {model: databricks/c}}\n",
        )
        .unwrap();
        let groups = &parsed.config.access_groups;
        assert_eq!(
            groups,
            &vec![
                AccessGroup { name: "beta".into(), models: vec!["a".into()] },
                AccessGroup { name: "cheap".into(), models: vec!["a".into(), "b".into()] },
            ]
        );
        assert_eq!(parsed.config.access_groups_of("a"), ["beta", "cheap"]);
        assert!(parsed.config.access_groups_of("c").is_empty());
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
        // Without any, nothing is added to the embedded JSON.
        let none = parse_yaml(SEED).unwrap();
        assert!(none.config.access_groups.is_empty());
        assert!(serde_json::to_value(&none.config).unwrap().get("access_groups").is_none());
    }

    #[test]
    fn odd_access_groups_are_errors_or_warnings_naming_the_field() {
        for (text, path) in [
            ("[{model_name: a, litellm_params: {model: databricks/a}, model_info: {access_groups: ['  ']}}]", "model_list[0].model_info.access_groups[0]"),
            ("[{model_name: a, litellm_params: {model: databricks/a}, model_info: {access_groups: [x, all-proxy-models]}}]", "model_list[0].model_info.access_groups[1]"),
            ("[{model_name: a, litellm_params: {model: databricks/a}, model_info: {access_groups: beta}}]", "model_list[0].model_info.access_groups"),
            ("[{model_name: a, litellm_params: {model: databricks/a}, model_info: {access_groups: [1]}}]", "model_list[0].model_info.access_groups[0]"),
        ] {
            let e = error_of(&format!("model_list: {text}"));
            assert_eq!(e.path, path, "{text}: {e}");
        }
        let parsed = parse_yaml(
            "model_list:\n\
             - {model_name: a, litellm_params: {model: databricks/a}, model_info: {access_groups: [g, g]}}\n\
             - {model_name: g, litellm_params: {model: databricks/g}, model_info: {access_groups: []}}\n\
             - {model_name: a, litellm_params: {model: databricks/a2}}\n",
        )
        .unwrap();
        let w = &parsed.warnings;
        assert!(
            w.iter().any(|w| w.starts_with("model_list[0].model_info.access_groups[1]: `g` is listed twice")),
            "{w:?}"
        );
        assert!(w.iter().any(|w| w.starts_with("model_list[1].model_info.access_groups: an empty list")), "{w:?}");
        assert!(w.iter().any(|w| w.contains("`g` is also a model_name")), "{w:?}");
        assert!(w.iter().any(|w| w.starts_with("model_list[2].model_info.access_groups: does not name `g`")), "{w:?}");
        assert_eq!(parsed.config.access_groups, vec![AccessGroup { name: "g".into(), models: vec!["a".into()] }]);
    }
}
