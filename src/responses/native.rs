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
use crate::wire::StreamRelay;

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

    /// The usage of `response.completed` (or `.incomplete`, `.failed`).
    pub fn responses_usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The relay's part in the pipeline (`wire::StreamRelay`).
impl StreamRelay for NativeRelay {
    /// Feeds upstream bytes; returns what to send to the client now.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let events = self.parser.feed(bytes);
        self.relay(events)
    }

    /// The upstream ended: a failure when it never said the Response was done.
    fn finish(&mut self) -> Vec<u8> {
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
    fn fail(&mut self, error: ApiError) -> Vec<u8> {
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

    fn is_closed(&self) -> bool {
        self.closed
    }

    fn chunks(&self) -> u64 {
        self.events
    }

    /// The Response's id, from its first lifecycle event.
    fn id(&self) -> Option<&str> {
        self.snapshot.as_ref()?.get("id")?.as_str()
    }

    fn generated_chars(&self) -> u64 {
        self.generated_chars
    }

    fn error(&self) -> Option<&ApiError> {
        self.error.as_ref()
    }

    fn usage(&self) -> Option<crate::openai::Usage> {
        self.responses_usage().map(|u| u.to_chat_usage())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responses::events::client::read;

    fn event(kind: &str, mut fields: Value, seq: u64) -> String {
        fields["type"] = Value::String(kind.to_string());
        fields["sequence_number"] = seq.into();
        format!("event: {kind}\ndata: {fields}\n\n")
    }

    fn response(status: &str, output: Value, usage: Value) -> Value {
        json!({"id": "resp_up1", "object": "response", "created_at": 1, "status": status, "model": "gpt-5-1-served",
               "output": output, "usage": usage, "store": false})
    }

    /// What Databricks' `/responses` streams for "Hi" (OpenAI's sequence).
    fn upstream() -> String {
        let msg =
            json!({"id": "msg_1", "type": "message", "status": "in_progress", "content": [], "role": "assistant"});
        let part = json!({"type": "output_text", "annotations": [], "text": ""});
        let done_part = json!({"type": "output_text", "annotations": [], "text": "Hi!"});
        let done_msg = json!({"id": "msg_1", "type": "message", "status": "completed", "content": [done_part], "role": "assistant"});
        let usage = json!({"input_tokens": 1500, "input_tokens_details": {"cached_tokens": 1280}, "output_tokens": 3,
                           "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 1503});
        let ids = json!({"item_id": "msg_1", "output_index": 0, "content_index": 0});
        let with = |extra: Value| {
            let mut v = ids.clone();
            v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            v
        };
        [
            event("response.created", json!({"response": response("in_progress", json!([]), Value::Null)}), 0),
            event("response.in_progress", json!({"response": response("in_progress", json!([]), Value::Null)}), 1),
            event("response.output_item.added", json!({"output_index": 0, "item": msg}), 2),
            event("response.content_part.added", with(json!({"part": part})), 3),
            event("response.output_text.delta", with(json!({"delta": "Hi", "logprobs": []})), 4),
            event("response.output_text.delta", with(json!({"delta": "!", "logprobs": []})), 5),
            event("response.output_text.done", with(json!({"text": "Hi!", "logprobs": []})), 6),
            event("response.content_part.done", with(json!({"part": done_part})), 7),
            event("response.output_item.done", json!({"output_index": 0, "item": done_msg}), 8),
            event("response.completed", json!({"response": response("completed", json!([done_msg]), usage)}), 9),
        ]
        .concat()
    }

    fn run(input: &str, cut: usize) -> (Vec<u8>, NativeRelay) {
        let mut relay = NativeRelay::new("databricks-gpt-5-1", vec![Secret::new("tok-secret-value".into())]);
        let mut out = relay.feed(&input.as_bytes()[..cut]);
        out.extend(relay.feed(&input.as_bytes()[cut..]));
        out.extend(relay.finish());
        (out, relay)
    }

    #[test]
    fn events_pass_through_with_the_clients_model_and_usage_is_read() {
        let input = upstream();
        for cut in (0..input.len()).step_by(5) {
            let (out, relay) = run(&input, cut);
            let client = read(&out);
            assert_eq!(client.events.len(), 10);
            assert_eq!(client.text, "Hi!");
            let last = client.last.as_ref().unwrap();
            assert_eq!(client.built.as_ref().unwrap()["output"], last["output"]);
            assert_eq!(last["model"], "databricks-gpt-5-1");
            assert_eq!(client.events[0]["response"]["model"], "databricks-gpt-5-1");
            let u = relay.responses_usage().unwrap();
            assert_eq!((u.input_tokens, u.cached_input_tokens, u.output_tokens), (1500, 1280, 3));
            assert_eq!(relay.generated_chars(), 3);
            assert_eq!(relay.id(), Some("resp_up1"));
            assert!(relay.is_closed() && relay.error().is_none());
        }
        // Events the gateway does not change go byte for byte.
        let (out, _) = run(&input, 0);
        let text = String::from_utf8(out).unwrap();
        let delta = input.split("\n\n").find(|e| e.contains("\"delta\":\"Hi\"")).unwrap();
        assert!(text.contains(delta));
    }

    #[test]
    fn data_only_events_and_done_are_framed_and_numbered() {
        // Without `event:` lines or sequence numbers, and with a `[DONE]` at the end.
        let data_only: String = upstream()
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let mut data: Value =
                    serde_json::from_str(e.lines().nth(1).unwrap().strip_prefix("data: ").unwrap()).unwrap();
                data.as_object_mut().unwrap().remove("sequence_number");
                format!("data: {data}\n\n")
            })
            .collect::<String>()
            + "data: [DONE]\n\n";
        let (out, relay) = run(&data_only, 0);
        let client = read(&out);
        assert_eq!(client.events.len(), 10);
        assert!(relay.error().is_none());
    }

    #[test]
    fn a_stream_cut_before_completed_fails_with_numbers_that_follow() {
        let input: String = upstream().split_inclusive("\n\n").take(5).collect();
        let (out, relay) = run(&input, 0);
        let client = read(&out);
        assert_eq!(client.types()[5..], ["response.failed", "error"]);
        let failed = client.last.unwrap();
        assert_eq!((failed["status"].as_str(), failed["id"].as_str()), (Some("failed"), Some("resp_up1")));
        assert_eq!(failed["model"], "databricks-gpt-5-1");
        assert_eq!(failed["error"]["code"], "server_error");
        assert_eq!(relay.error().map(|e| e.status), Some(502));
        assert_eq!(relay.generated_chars(), 2, "what was generated counts for the estimate");
        assert_eq!(relay.responses_usage(), None);
    }

    #[test]
    fn an_upstream_error_event_is_relayed_once_and_followed_by_response_failed() {
        let head: String = upstream().split_inclusive("\n\n").take(2).collect();
        let error =
            event("error", json!({"code": "server_error", "message": "boom tok-secret-value", "param": null}), 2);
        let (out, relay) = run(&(head + &error), 0);
        let client = read(&out);
        assert_eq!(client.types()[2..], ["error", "response.failed"]);
        assert_eq!(client.events[2]["message"], "boom [REDACTED]");
        assert!(relay.error().unwrap().message.contains("boom [REDACTED]"));
    }

    #[test]
    fn an_upstream_failed_response_ends_the_stream() {
        let head: String = upstream().split_inclusive("\n\n").take(2).collect();
        let mut failed = response("failed", json!([]), Value::Null);
        failed["error"] = json!({"code": "server_error", "message": "model crashed tok-secret-value"});
        let input = head
            + &event("response.failed", json!({"response": failed}), 2)
            + &event("response.output_text.delta", json!({}), 3);
        let (out, relay) = run(&input, 0);
        let client = read(&out);
        assert_eq!(client.types().last(), Some(&"response.failed"));
        assert_eq!(client.events.len(), 3, "nothing after the end");
        assert_eq!(
            client.last.unwrap()["error"]["message"],
            "Databricks reported a failed response: model crashed [REDACTED]"
        );
        assert_eq!(relay.error().map(|e| e.status), Some(502));
    }

    #[test]
    fn databricks_errors_and_garbage_in_the_stream_fail_it() {
        let head: String = upstream().split_inclusive("\n\n").take(1).collect();
        let (out, relay) =
            run(&(head.clone() + "data: {\"error_code\":\"REQUEST_LIMIT_EXCEEDED\",\"message\":\"slow\"}\n\n"), 0);
        let client = read(&out);
        assert_eq!(client.types(), ["response.created", "response.failed", "error"]);
        assert_eq!(client.last.unwrap()["error"]["message"], "Databricks returned 500 REQUEST_LIMIT_EXCEEDED: slow");
        assert!(relay.is_closed());
        let (out, _) = run(&(head + "data: {\"oops\": \n\n"), 0);
        assert!(read(&out).events.last().unwrap()["message"].as_str().unwrap().contains("malformed"));
        let mut relay = NativeRelay::new("m", vec![]);
        let out = relay.fail(ApiError::gateway_timeout("idle"));
        let client = read(&out);
        assert_eq!(client.types(), ["response.failed", "error"]);
        assert!(relay.fail(ApiError::gateway_timeout("again")).is_empty());
    }
}
