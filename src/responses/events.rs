//! Framing of Responses stream events: `event: <type>` and `data: <json>`, every event with
//! its `sequence_number`, and the two events that end a failed stream.

use serde_json::{json, Map, Value};

use crate::openai::ApiError;

/// Numbers and frames the events of one stream.
#[derive(Debug, Default)]
pub(super) struct Emitter {
    next: u64,
}

impl Emitter {
    /// Continues a stream whose last event had `last` as its sequence number.
    pub(super) fn after(last: Option<u64>) -> Emitter {
        Emitter { next: last.map_or(0, |n| n.saturating_add(1)) }
    }

    /// One event of `kind` with `fields` (an object), `type` first and `sequence_number` last.
    pub(super) fn emit(&mut self, kind: &str, fields: Value) -> String {
        let mut event = Map::new();
        event.insert("type".into(), Value::String(kind.to_string()));
        if let Value::Object(fields) = fields {
            event.extend(fields);
        }
        event.insert("sequence_number".into(), self.next.into());
        self.next += 1;
        frame(kind, &Value::Object(event).to_string())
    }
}

pub(super) fn frame(kind: &str, data: &str) -> String {
    format!("event: {kind}\ndata: {data}\n\n")
}

/// OpenAI's code for an error of a Response (`response.error.code`): Codex retries on
/// `rate_limit_exceeded` and `server_error`.
fn code(error: &ApiError) -> &'static str {
    match error.status {
        429 => "rate_limit_exceeded",
        400..=499 => "invalid_prompt",
        _ => "server_error",
    }
}

/// `response.error` of a failed Response.
pub(super) fn response_error(error: &ApiError) -> Value {
    json!({"code": code(error), "message": error.message})
}

/// The `error` event: OpenAI's fields (`code`, `message`, `param`), and the gateway's usual
/// envelope under `error`, which makes the OpenAI SDKs raise a typed `APIError` mid-stream
/// (their stream reader throws on any event carrying `error`).
pub(super) fn error_fields(error: &ApiError) -> Value {
    json!({"code": code(error), "message": error.message, "param": error.param, "error": error.to_json()["error"]})
}
