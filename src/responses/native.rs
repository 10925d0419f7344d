//! The relay of a native Databricks Responses stream: each event passes to the client as it
//! arrives (re-framed as `event:` + `data:`, `model` shown as the client named it in the
//! Response lifecycle events), while the relay reads the usage from `response.completed` and
//! counts generated characters for an estimate when the stream is cut.

use serde_json::{json, Map, Value};

use super::events::{error_fields, frame, response_error, Emitter};
use super::usage::Usage;
use crate::databricks::{redact, upstream_error};
use crate::openai::ApiError;
use crate::secret::Secret;
use crate::sse::SseParser;

/// Events that carry a whole Response.
const LIFECYCLE: [&str; 6] = [
    "response.created",
    "response.queued",
    "response.in_progress",
    "response.completed",
    "response.incomplete",
    "response.failed",
];
/// Events whose `delta` is generated text.
const DELTAS: [&str; 6] = [
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
    "response.custom_tool_call_input.delta",
    "response.refusal.delta",
];

#[derive(Debug)]
pub struct NativeRelay {
    parser: SseParser,
    model: String,
    secrets: Vec<Secret>,
    usage: Option<Usage>,
    /// The Response as the last lifecycle event showed it (for a failure the gateway reports).
    snapshot: Option<Map<String, Value>>,
    last_sequence: Option<u64>,
    generated_chars: u64,
    events: u64,
    /// An `error` event was relayed.
    error_sent: bool,
    closed: bool,
    error: Option<ApiError>,
}

impl NativeRelay {
    pub fn new(model: &str, secrets: Vec<Secret>) -> Self {
        NativeRelay {
            parser: SseParser::new(),
            model: model.to_string(),
            secrets,
            usage: None,
            snapshot: None,
            last_sequence: None,
            generated_chars: 0,
            events: 0,
            error_sent: false,
            closed: false,
            error: None,
        }
    }

    /// Feeds upstream bytes; returns what to send to the client now.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let events = self.parser.feed(bytes);
        self.relay(events)
    }

    /// The upstream ended: a failure when it never said the Response was done.
    pub fn finish(&mut self) -> Vec<u8> {
        let events = self.parser.finish();
        let mut out = self.relay(events);
        if !self.closed {
            let error = self.error.clone().unwrap_or_else(|| {
                ApiError::bad_gateway("Databricks ended the stream before the response was complete")
            });
            out.extend(self.fail(error));
        }
        out
    }

    /// The upstream failed (read error, idle timeout): `response.failed`, and `error` unless
    /// the upstream sent one already.
    pub fn fail(&mut self, error: ApiError) -> Vec<u8> {
        if self.closed {
            return Vec::new();
        }
        let mut emit = Emitter::after(self.last_sequence);
        let mut response = self.snapshot.clone().unwrap_or_default();
        response.insert("status".into(), "failed".into());
        response.insert("error".into(), response_error(&error));
        let mut out = emit.emit("response.failed", json!({"response": response}));
        if !self.error_sent {
            out.push_str(&emit.emit("error", error_fields(&error)));
        }
        self.error = Some(error);
        self.closed = true;
        out.into_bytes()
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The usage of `response.completed` (or `.incomplete`, `.failed`).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn generated_chars(&self) -> u64 {
        self.generated_chars
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    /// The Response's id, from its first lifecycle event.
    pub fn id(&self) -> Option<&str> {
        self.snapshot.as_ref()?.get("id")?.as_str()
    }

    pub fn error(&self) -> Option<&ApiError> {
        self.error.as_ref()
    }

    fn relay(&mut self, events: Vec<String>) -> Vec<u8> {
        let mut out = Vec::new();
        for data in events {
            if self.closed {
                break;
            }
            if data.trim() == "[DONE]" {
                continue;
            }
            out.extend(self.event(data));
        }
        out
    }

    fn event(&mut self, data: String) -> Vec<u8> {
        let secrets: Vec<&str> = self.secrets.iter().map(Secret::expose).collect();
        let mut event = match serde_json::from_str::<Value>(&data) {
            Ok(Value::Object(event)) => event,
            _ => return self.fail(ApiError::bad_gateway("Databricks sent a malformed stream event")),
        };
        let Some(kind) = event.get("type").and_then(Value::as_str).map(str::to_string) else {
            // Databricks' own error shape, inside the stream.
            if event.contains_key("error_code") || event.contains_key("error") {
                return self.fail(upstream_error(500, data.as_bytes(), &secrets));
            }
            return self.fail(ApiError::bad_gateway("Databricks sent a stream event without a type"));
        };
        self.events += 1;
        let mut changed = false;
        match event.get("sequence_number").and_then(Value::as_u64) {
            Some(n) => self.last_sequence = Some(self.last_sequence.map_or(n, |last| last.max(n))),
            None => {
                let n = self.last_sequence.map_or(0, |last| last + 1);
                event.insert("sequence_number".into(), n.into());
                self.last_sequence = Some(n);
                changed = true;
            }
        }
        if DELTAS.contains(&kind.as_str()) {
            let delta = event.get("delta").and_then(Value::as_str).map_or(0, |d| d.chars().count());
            self.generated_chars += delta as u64;
        }
        let mut terminal = false;
        if LIFECYCLE.contains(&kind.as_str()) {
            if let Some(response) = event.get_mut("response").and_then(Value::as_object_mut) {
                response.insert("model".into(), Value::String(self.model.clone()));
                changed = true;
                if let Some(usage) = Usage::from_responses(response.get("usage")) {
                    self.usage = Some(usage);
                }
                if kind == "response.failed" {
                    let message = response
                        .get("error")
                        .and_then(|e| e.get("message"))
                        .and_then(Value::as_str)
                        .unwrap_or("the response failed");
                    let message = redact(&format!("Databricks reported a failed response: {message}"), &secrets);
                    if let Some(error) = response.get_mut("error").and_then(Value::as_object_mut) {
                        error.insert("message".into(), Value::String(message.clone()));
                    }
                    self.error.get_or_insert(ApiError::bad_gateway(message));
                }
                self.snapshot = Some(response.clone());
            }
            terminal = matches!(kind.as_str(), "response.completed" | "response.incomplete" | "response.failed");
        }
        if kind == "error" {
            let message = event.get("message").and_then(Value::as_str).unwrap_or("error").to_string();
            let message = redact(&message, &secrets);
            event.insert("message".into(), Value::String(message.clone()));
            self.error.get_or_insert(ApiError::bad_gateway(format!("Databricks reported an error: {message}")));
            self.error_sent = true;
            changed = true;
        }
        self.closed = terminal;
        let text = if changed { Value::Object(event).to_string() } else { data };
        frame(&kind, &text).into_bytes()
    }
}
