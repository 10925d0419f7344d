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

/// A client of the stream, for the tests: it checks the framing and numbering, and builds the
/// Response from the events the way the OpenAI SDK's `responses.stream()` does (erring where it
/// errs), and the history the way Codex does (from `output_item.done`).
#[cfg(test)]
pub(super) mod client {
    use serde_json::Value;

    #[derive(Debug, Default)]
    pub struct Client {
        pub events: Vec<Value>,
        /// The SDK's snapshot, as built by the events before the final one replaced it.
        pub built: Option<Value>,
        /// The Response of the final `response.completed`, `.incomplete` or `.failed`.
        pub last: Option<Value>,
        /// Codex's history: the items of `output_item.done`.
        pub done_items: Vec<Value>,
        pub text: String,
    }

    impl Client {
        pub fn types(&self) -> Vec<&str> {
            self.events.iter().map(|e| e["type"].as_str().unwrap()).collect()
        }
    }

    pub fn read(bytes: &[u8]) -> Client {
        let text = std::str::from_utf8(bytes).unwrap();
        let mut client = Client::default();
        let mut snapshot: Option<Value> = None;
        for block in text.split("\n\n").filter(|b| !b.is_empty()) {
            let mut lines = block.lines();
            let event = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data: Value = serde_json::from_str(lines.next().unwrap().strip_prefix("data: ").unwrap()).unwrap();
            assert!(lines.next().is_none(), "one data line per event: {block}");
            assert_eq!(data["type"], event, "event name and type agree");
            assert_eq!(data["sequence_number"], client.events.len() as u64, "numbered from 0 without gaps: {data}");
            let kind = event.to_string();
            let s = snapshot.as_mut();
            match kind.as_str() {
                "response.created" => {
                    assert!(s.is_none(), "created comes once, first");
                    snapshot = Some(data["response"].clone());
                }
                "response.in_progress" => snapshot = Some(data["response"].clone()),
                "response.completed" | "response.incomplete" | "response.failed" => {
                    client.built = snapshot.take();
                    client.last = Some(data["response"].clone());
                    snapshot = client.last.clone();
                }
                "error" => {}
                _ => {
                    let s = s.expect("an event before response.created");
                    let i = data["output_index"].as_u64().unwrap() as usize;
                    let output = s["output"].as_array_mut().unwrap();
                    match kind.as_str() {
                        "response.output_item.added" => {
                            assert_eq!(i, output.len(), "items are added in order");
                            output.push(data["item"].clone());
                        }
                        "response.output_item.done" => {
                            output[i] = data["item"].clone();
                            client.done_items.push(data["item"].clone());
                        }
                        "response.content_part.added" => {
                            output[i]["content"].as_array_mut().unwrap().push(data["part"].clone())
                        }
                        "response.content_part.done" => {
                            let c = data["content_index"].as_u64().unwrap() as usize;
                            output[i]["content"][c] = data["part"].clone();
                        }
                        "response.output_text.delta" | "response.output_text.done" => {
                            let c = data["content_index"].as_u64().unwrap() as usize;
                            let part = &mut output[i]["content"][c];
                            assert_eq!(part["type"], "output_text", "expected content to be 'output_text'");
                            if kind.ends_with("delta") {
                                let delta = data["delta"].as_str().unwrap();
                                part["text"] = Value::String(format!("{}{delta}", part["text"].as_str().unwrap()));
                                client.text.push_str(delta);
                            } else {
                                assert_eq!(part["text"], data["text"], "done repeats what the deltas built");
                            }
                        }
                        "response.function_call_arguments.delta" => {
                            let item = &mut output[i];
                            assert_eq!(item["type"], "function_call");
                            let delta = data["delta"].as_str().unwrap();
                            item["arguments"] =
                                Value::String(format!("{}{delta}", item["arguments"].as_str().unwrap()));
                        }
                        "response.function_call_arguments.done" => {
                            assert_eq!(output[i]["arguments"], data["arguments"], "done repeats what the deltas built")
                        }
                        "response.custom_tool_call_input.delta" => {
                            let item = &mut output[i];
                            let delta = data["delta"].as_str().unwrap();
                            item["input"] = Value::String(format!("{}{delta}", item["input"].as_str().unwrap()));
                        }
                        "response.custom_tool_call_input.done" => assert_eq!(output[i]["input"], data["input"]),
                        "response.reasoning_summary_part.added" => {
                            output[i]["summary"].as_array_mut().unwrap().push(data["part"].clone())
                        }
                        "response.reasoning_summary_part.done" => {
                            let j = data["summary_index"].as_u64().unwrap() as usize;
                            output[i]["summary"][j] = data["part"].clone();
                        }
                        "response.reasoning_summary_text.delta" => {
                            let j = data["summary_index"].as_u64().unwrap() as usize;
                            let part = &mut output[i]["summary"][j];
                            let delta = data["delta"].as_str().unwrap();
                            part["text"] = Value::String(format!("{}{delta}", part["text"].as_str().unwrap()));
                        }
                        "response.reasoning_summary_text.done" => {
                            let j = data["summary_index"].as_u64().unwrap() as usize;
                            assert_eq!(output[i]["summary"][j]["text"], data["text"]);
                        }
                        other => panic!("unexpected event {other}"),
                    }
                }
            }
            client.events.push(data);
        }
        client
    }
}
