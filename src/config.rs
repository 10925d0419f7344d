//! The gateway's model config, normalised from LiteLLM's `litellm_config.yaml` at build time.
//!
//! `build.rs` turns the YAML into a JSON value, reads it with `normalise::parse` (through the
//! file's typed shape in `litellm`), fails the build on any error (with the field's path) and
//! embeds the [`GatewayConfig`] as JSON. The worker only deserialises that JSON: neither a YAML
//! parser nor the file's shape ships in the wasm.
//!
//! This module depends on serde alone, because build.rs compiles it too.

use serde::{Deserialize, Serialize};

use crate::money::Money;

// Build-time only: build.rs declares these two itself (next to this module); the lib compiles
// them for the tests alone. The paths are spelled out because build.rs includes this file by
// path, where a bare `mod` would look for `src/litellm.rs`.
#[cfg(test)]
#[path = "config/litellm.rs"]
pub mod litellm;
#[cfg(test)]
#[path = "config/normalise.rs"]
pub mod normalise;

/// LiteLLM's special entry in a key's `models` meaning every configured model.
pub const ALL_MODELS: &str = "all-proxy-models";

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
    /// The model access groups (`model_info.access_groups`), in the order the file names them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_groups: Vec<AccessGroup>,
}

/// A model access group: a name a key's `models` may list instead of each model in it.
/// Embedded as a `[name, models]` pair: the worker reads such pairs already (fallbacks), so
/// it gets no reader of its own in the wasm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "(String, Vec<String>)", into = "(String, Vec<String>)")]
pub struct AccessGroup {
    pub name: String,
    /// The model groups (`model_name`s) in it, in file order.
    pub models: Vec<String>,
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

impl From<(String, Vec<String>)> for AccessGroup {
    fn from((name, models): (String, Vec<String>)) -> Self {
        AccessGroup { name, models }
    }
}

impl From<AccessGroup> for (String, Vec<String>) {
    fn from(g: AccessGroup) -> Self {
        (g.name, g.models)
    }
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
    pub input_cost_per_token: Option<Money>,
    /// Pico-dollars per completion token.
    pub output_cost_per_token: Option<Money>,
    /// Pico-dollars per prompt token read from the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_token_cost: Option<Money>,
    /// Pico-dollars per prompt token written to the prompt cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_token_cost: Option<Money>,
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

    /// The access groups `group` is in, in file order.
    pub fn access_groups_of(&self, group: &str) -> Vec<&str> {
        self.access_groups.iter().filter(|a| a.models.iter().any(|m| m == group)).map(|a| a.name.as_str()).collect()
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
