//! The one structured log line written per request. It holds ids, names, timings and token
//! counts only: never a key, a token or prompt text.

use serde::Serialize;

use crate::json;
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
        let mut line = Line(Vec::with_capacity(384));
        line.0.push(b'{');
        line.str("call_id", Some(&self.call_id));
        line.str("method", Some(&self.method));
        line.str("route", Some(&self.route));
        line.num("status", Some(self.status.into()));
        line.str("key_hash", self.key_hash.as_deref());
        line.str("key_alias", self.key_alias.as_deref());
        line.str("model", self.model.as_deref());
        line.str("deployment", self.deployment.as_deref());
        line.bool("stream", self.stream);
        line.num("upstream_status", self.upstream_status.map(u64::from));
        line.num("upstream_ms", self.upstream_ms);
        line.num("total_ms", Some(self.total_ms));
        line.num("prompt_tokens", self.prompt_tokens);
        line.num("completion_tokens", self.completion_tokens);
        line.num("total_tokens", self.total_tokens);
        line.num("cache_read_tokens", self.cache_read_tokens);
        line.num("cache_creation_tokens", self.cache_creation_tokens);
        line.str("cost", self.cost.as_deref());
        line.str("price", self.price);
        line.bool("estimated", self.estimated);
        line.num("chunks", self.chunks);
        line.bool("client_disconnected", self.client_disconnected);
        if !self.dropped_params.is_empty() {
            line.key("dropped_params");
            line.0.push(b'[');
            for (i, name) in self.dropped_params.iter().enumerate() {
                if i > 0 {
                    line.0.push(b',');
                }
                json::write_str(&mut line.0, name);
            }
            line.0.push(b']');
        }
        line.str("error_type", self.error_type);
        line.0.push(b'}');
        // Only whole strings and ASCII were written.
        String::from_utf8(line.0).unwrap_or_default()
    }
}

/// A JSON object being written, its fields in order.
struct Line(Vec<u8>);

impl Line {
    fn key(&mut self, name: &str) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        self.0.push(b'"');
        self.0.extend_from_slice(name.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    fn str(&mut self, name: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.key(name);
            json::write_str(&mut self.0, value);
        }
    }

    fn num(&mut self, name: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.key(name);
            json::write_u64(&mut self.0, value);
        }
    }

    fn bool(&mut self, name: &str, value: Option<bool>) {
        if let Some(value) = value {
            self.key(name);
            self.0.extend_from_slice(if value { b"true" } else { b"false" });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_is_what_serde_makes_of_the_struct() {
        let full = RequestLog {
            call_id: "3f2c1e9a-7b4d-4c8e-9a1f-0d2b6e5c7a84".into(),
            method: "POST".into(),
            route: "/v1/chat/completions".into(),
            status: 200,
            key_hash: Some("0123456789abcdef".into()),
            key_alias: Some("team \"a\" é\n".into()),
            model: Some("databricks-gpt-5-1".into()),
            deployment: Some("gpt51-primary".into()),
            stream: Some(true),
            upstream_status: Some(429),
            upstream_ms: Some(u64::MAX),
            total_ms: 0,
            prompt_tokens: Some(412),
            cache_read_tokens: Some(400),
            cache_creation_tokens: Some(12),
            completion_tokens: Some(131),
            total_tokens: Some(543),
            cost: Some("0.00005499991".into()),
            price: Some("unknown: charged 0"),
            estimated: Some(false),
            chunks: Some(7),
            client_disconnected: Some(true),
            dropped_params: vec!["user".into(), "seed\u{1}".into()],
            error_type: Some("api_error"),
        };
        let mut partial =
            RequestLog { method: "GET".into(), route: "/health".into(), status: 404, ..Default::default() };
        let mut logs = vec![RequestLog::default(), full];
        partial.dropped_params = vec!["x".into()];
        logs.push(partial);
        logs.push(RequestLog { stream: Some(false), total_ms: 5, error_type: Some("x"), ..Default::default() });
        for log in logs {
            assert_eq!(log.to_line(), serde_json::to_string(&log).unwrap());
        }
    }
}
