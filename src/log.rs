//! The one structured log line written per request. It holds ids, names, timings and token
//! counts only: never a key, a token or prompt text.

use serde::Serialize;

use crate::openai::Usage;

#[derive(Debug, Default, Serialize)]
pub struct RequestLog {
    pub call_id: String,
    pub method: String,
    pub route: String,
    pub status: u16,
    /// The first 16 hex digits of a virtual key's hash (never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<u64>,
    pub total_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_tokens: Option<u64>,
    /// Prompt tokens read from or written to the prompt cache (part of `prompt_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_tokens: Option<u64>,
    /// What the request cost, in USD (exact decimal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    /// Set when the model has no known price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<&'static str>,
    /// For streams: the usage was estimated (cut before Databricks reported any).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub estimated: Option<bool>,
    /// For streams: the number of chunks relayed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<u64>,
    /// For streams: the client went away before the end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_disconnected: Option<bool>,
    /// Parameters removed because Databricks does not take them (`drop_params`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub dropped_params: Vec<String>,
    /// What a translation to another API could not carry and left out (hosted tools, ...).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub left_out: Vec<String>,
    /// The OpenAI error type, when the request failed (the message may quote the upstream).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_type: Option<&'static str>,
}

impl RequestLog {
    pub fn set_usage(&mut self, usage: Option<Usage>) {
        if let Some(u) = usage {
            self.prompt_tokens = Some(u.prompt_tokens);
            self.completion_tokens = Some(u.completion_tokens);
            self.total_tokens = Some(u.total_tokens);
            self.cache_read_tokens = (u.cache_read_tokens > 0).then_some(u.cache_read_tokens);
            self.cache_creation_tokens = (u.cache_creation_tokens > 0).then_some(u.cache_creation_tokens);
        }
    }

    /// The line: what `serde_json::to_string` makes of the struct (fields in order, those
    /// without a value left out), written directly.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
