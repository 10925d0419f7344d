//! The relay of a native Messages stream (`{api_base}/anthropic/v1/messages`, `stream: true`):
//! each event passes on as soon as it is complete, unchanged but for the model's name in
//! `message_start` and secrets in error messages. On the way it reads the usage
//! (`message_start`: input and cache tokens; `message_delta`: output tokens, cumulative) and
//! counts the generated characters, for an estimate when a stream is cut before its usage.
//!
//! The interface is `stream::ChatStreamRelay`'s: the runtime feeds upstream reads and writes
//! what comes back.

use serde_json::Value;

use super::{error_event, event, Usage};
use crate::databricks::upstream_error;
use crate::openai::ApiError;
use crate::secret::Secret;
use crate::sse::SseParser;
use crate::wire::StreamRelay;

#[derive(Debug)]
pub struct NativeStreamRelay {
    parser: SseParser,
    model_group: String,
    secrets: Vec<Secret>,
    usage: Option<Usage>,
    id: Option<String>,
    generated_chars: u64,
    events: u64,
    /// `message_stop` was relayed, or an error: nothing more goes to the client.
    closed: bool,
    error: Option<ApiError>,
}

impl NativeStreamRelay {
    pub fn new(model_group: &str, secrets: Vec<Secret>) -> Self {
        NativeStreamRelay {
            parser: SseParser::new(),
            model_group: model_group.to_string(),
            secrets,
            usage: None,
            id: None,
            generated_chars: 0,
            events: 0,
            closed: false,
            error: None,
        }
    }

    fn relay(&mut self, events: Vec<String>) -> Vec<u8> {
        let mut out = Vec::new();
        for data in events {
            if self.closed {
                break;
            }
            out.extend(self.relay_event(data));
        }
        out
    }

    fn relay_event(&mut self, data: String) -> Vec<u8> {
        let mut value = match serde_json::from_str::<Value>(&data) {
            Ok(v @ Value::Object(_)) => v,
            _ => return self.fail(ApiError::bad_gateway("Databricks sent a malformed stream event")),
        };
        let kind = match value.get("type").and_then(Value::as_str) {
            Some(kind) => kind.to_string(),
            // Databricks' own error shape, without a type.
            None if value.get("error_code").is_some() || value.get("error").is_some() => "error".to_string(),
            None => return self.fail(ApiError::bad_gateway("Databricks sent a stream event without a type")),
        };
        self.events += 1;
        match kind.as_str() {
            "message_start" => {
                let message = value.get_mut("message");
                if let Some(message) = message.and_then(Value::as_object_mut) {
                    self.id = message.get("id").and_then(Value::as_str).map(str::to_string);
                    let mut usage = self.usage.unwrap_or_default();
                    if let Some(u) = message.get("usage").and_then(Value::as_object) {
                        usage.update(u);
                        self.usage = Some(usage);
                    }
                    message.insert("model".into(), Value::String(self.model_group.clone()));
                }
                return event("message_start", &value.to_string()).into_bytes();
            }
            "message_delta" => {
                if let Some(u) = value.get("usage").and_then(Value::as_object) {
                    let mut usage = self.usage.unwrap_or_default();
                    usage.update(u);
                    self.usage = Some(usage);
                }
            }
            "content_block_start" => {
                let block = &value["content_block"];
                for field in ["text", "thinking", "name"] {
                    self.generated_chars += chars(&block[field]);
                }
            }
            "content_block_delta" => {
                let delta = &value["delta"];
                for field in ["text", "thinking", "partial_json"] {
                    self.generated_chars += chars(&delta[field]);
                }
            }
            "message_stop" => {
                self.closed = true;
            }
            "error" => {
                let secrets: Vec<&str> = self.secrets.iter().map(Secret::expose).collect();
                let status = value.pointer("/error/type").and_then(Value::as_str).map_or(500, status_of_type);
                return self.fail(upstream_error(status, data.as_bytes(), &secrets));
            }
            _ => {}
        }
        // Passed on as it came.
        event(&kind, &data).into_bytes()
    }

    /// The usage the events reported (`None` if no `message_start` carried any).
    pub fn anthropic_usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The relay's part in the pipeline (`wire::StreamRelay`).
impl StreamRelay for NativeStreamRelay {
    /// Feeds upstream bytes; returns the complete events among them, framed for the client.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let events = self.parser.feed(bytes);
        self.relay(events)
    }

    /// The upstream ended: an error event if it ended before `message_stop`.
    fn finish(&mut self) -> Vec<u8> {
        let events = self.parser.finish();
        let mut out = self.relay(events);
        if !self.closed {
            out.extend(self.fail(ApiError::bad_gateway("Databricks ended the stream before the Message was complete")));
        }
        out
    }

    /// The upstream failed (read error, idle timeout): an error event ends the stream.
    fn fail(&mut self, error: ApiError) -> Vec<u8> {
        if self.closed {
            return Vec::new();
        }
        let out = error_event(&error).into_bytes();
        self.error = Some(error);
        self.closed = true;
        out
    }

    /// True once the client's stream is complete: stop reading the upstream.
    fn is_closed(&self) -> bool {
        self.closed
    }

    /// Events relayed.
    fn chunks(&self) -> u64 {
        self.events
    }

    /// The Message's id (`msg_...`), from `message_start`.
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    fn generated_chars(&self) -> u64 {
        self.generated_chars
    }

    fn error(&self) -> Option<&ApiError> {
        self.error.as_ref()
    }

    fn usage(&self) -> Option<crate::openai::Usage> {
        self.anthropic_usage().map(|u| u.to_chat())
    }
}

fn chars(v: &Value) -> u64 {
    v.as_str().map_or(0, |t| t.chars().count() as u64)
}

/// The status Anthropic answers with for an `error.type`, for errors met inside a stream.
pub(super) fn status_of_type(kind: &str) -> u16 {
    match kind {
        "invalid_request_error" => 400,
        "authentication_error" => 401,
        "billing_error" => 402,
        "permission_error" => 403,
        "not_found_error" => 404,
        "request_too_large" => 413,
        "rate_limit_error" => 429,
        "timeout_error" => 504,
        "overloaded_error" => 529,
        _ => 500,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A stream as Claude sends it: thinking, text, a tool call, usage with cache tokens.
    fn claude_stream() -> String {
        let events = [
            (
                "message_start",
                json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
                "model": "claude-sonnet-4-5-served", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 12, "cache_creation_input_tokens": 1500, "cache_read_input_tokens": 0, "output_tokens": 1}}}),
            ),
            ("ping", json!({"type": "ping"})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm…"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}}),
            ),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 0})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Héllo"}}),
            ),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 1})),
            (
                "content_block_start",
                json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            ),
            (
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 2, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
            ),
            ("content_block_stop", json!({"type": "content_block_stop", "index": 2})),
            (
                "message_delta",
                json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 42}}),
            ),
            ("message_stop", json!({"type": "message_stop"})),
        ];
        events.iter().map(|(name, data)| format!("event: {name}\ndata: {data}\n\n")).collect()
    }

    /// (event name, data) pairs of a relay's output.
    fn parse(out: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(out).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                (
                    name.strip_prefix("event: ").unwrap().to_string(),
                    serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn events_pass_one_by_one_at_every_cut() {
        let input = claude_stream();
        let expected = parse(input.as_bytes());
        for cut in (0..input.len()).step_by(7) {
            let mut relay = NativeStreamRelay::new("my-claude", vec![]);
            let first = relay.feed(&input.as_bytes()[..cut]);
            // Only whole events leave, as soon as they are whole.
            let complete = input.as_bytes()[..cut].windows(2).filter(|w| w == b"\n\n").count();
            assert_eq!(parse(&first).len(), complete, "cut {cut}");
            let mut out = first;
            out.extend(relay.feed(&input.as_bytes()[cut..]));
            assert!(relay.is_closed());
            out.extend(relay.finish());
            let got = parse(&out);
            assert_eq!(got.len(), expected.len());
            for ((name, data), (want_name, want)) in got.iter().zip(&expected) {
                assert_eq!(name, want_name);
                if name == "message_start" {
                    assert_eq!(data["message"]["model"], "my-claude");
                    assert_eq!(data["message"]["usage"], want["message"]["usage"]);
                } else {
                    assert_eq!(data, want);
                }
            }
            assert_eq!(
                relay.anthropic_usage(),
                Some(Usage {
                    input_tokens: 12,
                    output_tokens: 42,
                    cache_creation_input_tokens: 1500,
                    cache_read_input_tokens: 0
                })
            );
            assert_eq!(relay.id(), Some("msg_01"));
            assert_eq!(relay.generated_chars(), 4 + 5 + 11 + 8 + 8);
            assert!(relay.error().is_none());
            assert_eq!(relay.chunks(), 15);
        }
    }

    #[test]
    fn newer_message_deltas_update_the_input_counts_too() {
        let input = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"content\":[],\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":300,\"output_tokens\":9}}\n\n";
        let mut relay = NativeStreamRelay::new("m", vec![]);
        relay.feed(input.as_bytes());
        assert_eq!(relay.anthropic_usage().map(|u| (u.prompt_tokens(), u.output_tokens)), Some((305, 9)));
    }

    #[test]
    fn a_cut_stream_ends_with_an_error_event_and_keeps_what_it_counted() {
        let input = claude_stream();
        // Right after the text delta.
        let cut = input.find("Héllo").unwrap() + input[input.find("Héllo").unwrap()..].find("\n\n").unwrap() + 2;
        let mut relay = NativeStreamRelay::new("m", vec![]);
        let mut out = relay.feed(&input.as_bytes()[..cut]);
        out.extend(relay.finish());
        let events = parse(&out);
        let (name, data) = events.last().unwrap();
        assert_eq!(name, "error");
        assert_eq!(data["error"]["type"], "api_error");
        assert_eq!(relay.error().map(|e| e.status), Some(502));
        assert_eq!(relay.anthropic_usage().map(|u| u.output_tokens), Some(1));
        assert_eq!(relay.generated_chars(), 4 + 5);
        assert!(relay.fail(ApiError::gateway_timeout("late")).is_empty());
    }

    #[test]
    fn upstream_errors_are_relayed_with_their_type_and_without_secrets() {
        let mut relay = NativeStreamRelay::new("m", vec![Secret::new("tok-secret-value".into())]);
        let out = relay.feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded tok-secret-value\"}}\n\n");
        let events = parse(&out);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].0, "error");
        assert_eq!(events[0].1["error"]["type"], "overloaded_error");
        assert!(events[0].1["error"]["message"].as_str().unwrap().contains("Overloaded [REDACTED]"));
        assert_eq!(relay.error().map(|e| e.status), Some(529));
        assert!(relay.is_closed());
        // Databricks' own shape in a stream, and garbage.
        let mut relay = NativeStreamRelay::new("m", vec![]);
        let out = relay.feed(b"data: {\"error_code\":\"INTERNAL_ERROR\",\"message\":\"boom\"}\n\n");
        assert_eq!(parse(&out)[0].1["error"]["type"], "api_error");
        let mut relay = NativeStreamRelay::new("m", vec![]);
        let out = relay.feed(b"event: message_start\ndata: {\"oops\": \n\n");
        assert!(parse(&out)[0].1["error"]["message"].as_str().unwrap().contains("malformed"));
        assert!(relay.is_closed());
    }

    #[test]
    fn nothing_passes_after_message_stop() {
        let mut input = claude_stream();
        input.push_str("event: ping\ndata: {\"type\":\"ping\"}\n\n");
        let mut relay = NativeStreamRelay::new("m", vec![]);
        let out = relay.feed(input.as_bytes());
        assert_eq!(parse(&out).last().unwrap().0, "message_stop");
        assert!(relay.finish().is_empty());
    }
}
