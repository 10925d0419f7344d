//! The one structured log line written per request. It holds ids, names, timings and token
//! counts only: never a key, a token or prompt text.

use serde::Serialize;

use crate::json::{ObjectWriter, ToJson};
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
    /// without a value left out), written by hand ([`ToJson`]: a smaller wasm).
    pub fn to_line(&self) -> String {
        crate::json::to_string(self)
    }
}

impl ToJson for RequestLog {
    fn write_json(&self, out: &mut Vec<u8>) {
        let RequestLog {
            call_id,
            method,
            route,
            status,
            key_hash,
            key_alias,
            model,
            deployment,
            stream,
            upstream_status,
            upstream_ms,
            total_ms,
            prompt_tokens,
            completion_tokens,
            total_tokens,
            cache_read_tokens,
            cache_creation_tokens,
            cost,
            price,
            estimated,
            chunks,
            client_disconnected,
            dropped_params,
            left_out,
            error_type,
        } = self;
        let mut o = ObjectWriter::new(out);
        o.field("call_id", call_id).field("method", method).field("route", route).field("status", status);
        o.some("key_hash", key_hash).some("key_alias", key_alias).some("model", model);
        o.some("deployment", deployment).some("stream", stream).some("upstream_status", upstream_status);
        o.some("upstream_ms", upstream_ms).field("total_ms", total_ms);
        o.some("prompt_tokens", prompt_tokens).some("completion_tokens", completion_tokens);
        o.some("total_tokens", total_tokens).some("cache_read_tokens", cache_read_tokens);
        o.some("cache_creation_tokens", cache_creation_tokens).some("cost", cost).some("price", price);
        o.some("estimated", estimated).some("chunks", chunks).some("client_disconnected", client_disconnected);
        if !dropped_params.is_empty() {
            o.field("dropped_params", dropped_params);
        }
        if !left_out.is_empty() {
            o.field("left_out", left_out);
        }
        o.some("error_type", error_type);
        o.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_what_serde_writes() {
        let full = RequestLog {
            call_id: "c".into(),
            method: "POST".into(),
            route: "/v1/chat/completions".into(),
            status: 200,
            key_hash: Some("0123456789abcdef".into()),
            key_alias: Some("al\"ias\n".into()),
            model: Some("m".into()),
            deployment: Some("d".into()),
            stream: Some(true),
            upstream_status: Some(429),
            upstream_ms: Some(12),
            total_ms: 34,
            prompt_tokens: Some(1),
            completion_tokens: Some(2),
            total_tokens: Some(3),
            cache_read_tokens: Some(4),
            cache_creation_tokens: Some(5),
            cost: Some("0.00001".into()),
            price: Some("unknown"),
            estimated: Some(false),
            chunks: Some(6),
            client_disconnected: Some(true),
            dropped_params: vec!["user".into()],
            left_out: vec!["web_search".into(), "x".into()],
            error_type: Some("rate_limit_error"),
        };
        for log in [RequestLog::default(), full] {
            assert_eq!(log.to_line(), serde_json::to_string(&log).unwrap());
        }
    }
}
