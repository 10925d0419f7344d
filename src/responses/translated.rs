//! A Databricks chat stream as the Responses event sequence, as a pure state machine: chat
//! chunks in (bytes cut anywhere), Responses events out, exactly in OpenAI's order:
//!
//! ```text
//! response.created, response.in_progress
//! per reasoning item:  output_item.added, reasoning_summary_part.added,
//!                      reasoning_summary_text.delta…, reasoning_summary_text.done,
//!                      reasoning_summary_part.done, output_item.done
//! per message:         output_item.added, content_part.added, output_text.delta…,
//!                      output_text.done, content_part.done, output_item.done
//! per function call:   output_item.added, function_call_arguments.delta…,
//!                      function_call_arguments.done, output_item.done
//! response.completed (or response.incomplete when cut by max_output_tokens), with usage
//! ```
//!
//! An upstream failure ends the stream with `response.failed` (what Codex reads) and an `error`
//! event (what makes the OpenAI SDKs raise). The `output` of the final Response holds every item
//! as its `output_item.done` gave it: what `responses.stream().finalResponse()` returns.

use serde_json::{json, Value};

use super::answer::{
    encrypted_redacted, encrypted_signature, message_item, output_text, reasoning_item, status_of, ResponseShell,
};
use super::chat::custom_input;
use super::events::{error_fields, response_error, Emitter};
use super::usage::Usage;
use crate::databricks::{normalize_chunk, Chunk, StreamChunk};
use crate::openai::ApiError;
use crate::secret::Secret;
use crate::sse::SseParser;

#[derive(Debug)]
enum Kind {
    Reasoning {
        /// The summary part was announced (`reasoning_summary_part.added`).
        summary: bool,
        encrypted: Option<String>,
    },
    Message,
    Call {
        /// The tool call's `index` in the chat stream.
        chat_index: u64,
        call_id: String,
        name: String,
        custom: bool,
    },
}

#[derive(Debug)]
struct Item {
    id: String,
    kind: Kind,
    /// The reasoning summary, the message text, or the call's arguments so far.
    text: String,
    /// Its `output_item.done`, once sent.
    done: Option<Value>,
}

#[derive(Debug)]
pub struct TranslatedRelay {
    parser: SseParser,
    shell: ResponseShell,
    secrets: Vec<Secret>,
    emit: Emitter,
    started: bool,
    items: Vec<Item>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
    generated_chars: u64,
    chunks: u64,
    closed: bool,
    error: Option<ApiError>,
}

impl TranslatedRelay {
    /// A relay for the Response `shell` describes; `secrets` are scrubbed from upstream errors.
    pub fn new(shell: ResponseShell, secrets: Vec<Secret>) -> Self {
        TranslatedRelay {
            parser: SseParser::new(),
            shell,
            secrets,
            emit: Emitter::default(),
            started: false,
            items: Vec::new(),
            finish_reason: None,
            usage: None,
            generated_chars: 0,
            chunks: 0,
            closed: false,
            error: None,
        }
    }

    /// `response.created` and `response.in_progress`, once: send them as soon as the upstream
    /// answered (`feed` sends them first otherwise).
    pub fn start(&mut self) -> Vec<u8> {
        if self.started {
            return Vec::new();
        }
        self.started = true;
        let response = self.shell.response("in_progress", Vec::new(), None, None, None);
        let mut out = self.emit.emit("response.created", json!({"response": response}));
        out.push_str(&self.emit.emit("response.in_progress", json!({"response": response})));
        out.into_bytes()
    }

    /// Feeds upstream bytes; returns what to send to the client now.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = self.start();
        let events = self.parser.feed(bytes);
        out.extend(self.relay(events));
        out
    }

    /// The upstream ended: the final events, or a failure if the answer was cut short.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = self.start();
        let events = self.parser.finish();
        out.extend(self.relay(events));
        if !self.closed {
            out.extend(match self.finish_reason {
                Some(_) => self.complete(),
                None => self.fail(ApiError::bad_gateway("Databricks ended the stream before the answer was complete")),
            });
        }
        out
    }

    /// The upstream failed (read error, idle timeout): `response.failed` and `error`.
    pub fn fail(&mut self, error: ApiError) -> Vec<u8> {
        if self.closed {
            return Vec::new();
        }
        let mut out = String::from_utf8(self.start()).unwrap_or_default();
        let output = self.items.iter().filter_map(|i| i.done.clone()).collect();
        let response = self.shell.response("failed", output, self.usage.as_ref(), None, Some(response_error(&error)));
        out.push_str(&self.emit.emit("response.failed", json!({"response": response})));
        out.push_str(&self.emit.emit("error", error_fields(&error)));
        self.error = Some(error);
        self.closed = true;
        out.into_bytes()
    }

    /// True once the client's stream is complete: stop reading the upstream.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The last usage the upstream reported (cumulative on Databricks).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Characters of text, reasoning and tool calls relayed, to estimate usage never sent.
    pub fn generated_chars(&self) -> u64 {
        self.generated_chars
    }

    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    pub fn id(&self) -> &str {
        &self.shell.id
    }

    /// The error that ended the stream, if one did.
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
                out.extend(match self.finish_reason {
                    Some(_) => self.complete(),
                    None => {
                        self.fail(ApiError::bad_gateway("Databricks ended the stream before the answer was complete"))
                    }
                });
                break;
            }
            let secrets: Vec<&str> = self.secrets.iter().map(Secret::expose).collect();
            match normalize_chunk(&data, &self.shell.model, &secrets) {
                Chunk::Data(chunk) => out.extend(self.chunk(chunk).into_bytes()),
                Chunk::Error(error) => out.extend(self.fail(error)),
                Chunk::Malformed => {
                    out.extend(self.fail(ApiError::bad_gateway("Databricks sent a malformed stream chunk")))
                }
            }
        }
        out
    }

    fn chunk(&mut self, StreamChunk { chunk, usage, generated_chars, .. }: StreamChunk) -> String {
        self.chunks += 1;
        self.generated_chars += generated_chars;
        if let Some(usage) = Usage::from_chat(usage.as_ref()) {
            self.usage = Some(usage);
        }
        let Some(choice) = chunk.get("choices").and_then(|c| c.get(0)) else { return String::new() };
        let mut out = String::new();
        if let Some(delta) = choice.get("delta") {
            if let Some(text) = delta.get("reasoning_content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                out.push_str(&self.reasoning_delta(text));
            }
            for block in delta.get("thinking_blocks").and_then(Value::as_array).into_iter().flatten() {
                let s = |k: &str| block.get(k).and_then(Value::as_str);
                match (s("type"), s("signature"), s("data")) {
                    (Some("thinking"), Some(signature), _) => out.push_str(&self.signature(signature)),
                    (Some("redacted_thinking"), _, Some(data)) => out.push_str(&self.redacted(data)),
                    _ => {}
                }
            }
            if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                out.push_str(&self.text_delta(text));
            }
            for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
                out.push_str(&self.call_delta(call));
            }
        }
        if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
            self.finish_reason = Some(reason.to_string());
        }
        out
    }

    fn open(&self, kind: fn(&Kind) -> bool) -> Option<usize> {
        self.items.iter().position(|i| i.done.is_none() && kind(&i.kind))
    }

    fn add(&mut self, prefix: &str, kind: Kind, item: Value) -> (usize, String) {
        let index = self.items.len();
        let id = self.shell.item_id(prefix, index);
        let mut item = item;
        item["id"] = Value::String(id.clone());
        let mut added = serde_json::Map::new();
        added.insert("id".into(), Value::String(id.clone()));
        if let Value::Object(fields) = item {
            added.extend(fields.into_iter().filter(|(k, _)| k != "id"));
        }
        let event = self.emit.emit("response.output_item.added", json!({"output_index": index, "item": added}));
        self.items.push(Item { id: id.clone(), kind, text: String::new(), done: None });
        (index, event)
    }

    fn reasoning_delta(&mut self, text: &str) -> String {
        let mut out = self.close_where(|k| !matches!(k, Kind::Reasoning { .. }));
        let index = match self.open(|k| matches!(k, Kind::Reasoning { .. })) {
            Some(index) => index,
            None => {
                let kind = Kind::Reasoning { summary: false, encrypted: None };
                let (index, event) = self.add("rs", kind, json!({"type": "reasoning", "summary": []}));
                out.push_str(&event);
                index
            }
        };
        let id = self.items[index].id.clone();
        if let Kind::Reasoning { summary: announced @ false, .. } = &mut self.items[index].kind {
            *announced = true;
            out.push_str(&self.emit.emit(
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
            ));
        }
        self.items[index].text.push_str(text);
        out.push_str(&self.emit.emit(
            "response.reasoning_summary_text.delta",
            json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": text}),
        ));
        out
    }

    /// A thinking block's signature ends the block: its item is done, carrying it.
    fn signature(&mut self, signature: &str) -> String {
        let Some(index) = self.open(|k| matches!(k, Kind::Reasoning { .. })) else { return String::new() };
        if let Kind::Reasoning { encrypted, .. } = &mut self.items[index].kind {
            *encrypted = Some(encrypted_signature(signature));
        }
        self.close(index)
    }

    /// Redacted thinking is an item of its own, with nothing to show.
    fn redacted(&mut self, data: &str) -> String {
        let mut out = self.close_where(|_| true);
        let kind = Kind::Reasoning { summary: false, encrypted: Some(encrypted_redacted(data)) };
        let (index, event) = self.add("rs", kind, json!({"type": "reasoning", "summary": []}));
        out.push_str(&event);
        out.push_str(&self.close(index));
        out
    }

    fn text_delta(&mut self, text: &str) -> String {
        let mut out = self.close_where(|k| !matches!(k, Kind::Message));
        let index = match self.open(|k| matches!(k, Kind::Message)) {
            Some(index) => index,
            None => {
                let item = json!({"type": "message", "status": "in_progress", "content": [], "role": "assistant"});
                let (index, event) = self.add("msg", Kind::Message, item);
                out.push_str(&event);
                let id = self.items[index].id.clone();
                out.push_str(&self.emit.emit(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": output_text("")}),
                ));
                index
            }
        };
        self.items[index].text.push_str(text);
        let id = self.items[index].id.clone();
        out.push_str(&self.emit.emit(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
        ));
        out
    }

    fn call_delta(&mut self, call: &Value) -> String {
        let mut out = self.close_where(|k| !matches!(k, Kind::Call { .. }));
        let chat_index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function").unwrap_or(&Value::Null);
        let index = match self
            .items
            .iter()
            .position(|i| i.done.is_none() && matches!(i.kind, Kind::Call { chat_index: c, .. } if c == chat_index))
        {
            Some(index) => index,
            None => {
                let output_index = self.items.len();
                let call_id = match call.get("id").and_then(Value::as_str) {
                    Some(id) => id.to_string(),
                    None => self.shell.call_id(output_index),
                };
                let name = function.get("name").and_then(Value::as_str).unwrap_or("").to_string();
                let custom = self.shell.tools.is_custom(&name);
                let item = self.shell.tools.call_item("", &call_id, &name, "", "in_progress");
                let kind = Kind::Call { chat_index, call_id, name, custom };
                let (index, event) = self.add(if custom { "ctc" } else { "fc" }, kind, item);
                out.push_str(&event);
                index
            }
        };
        let Some(fragment) = function.get("arguments").and_then(Value::as_str).filter(|a| !a.is_empty()) else {
            return out;
        };
        self.items[index].text.push_str(fragment);
        // A custom tool's input is inside the JSON arguments: it is sent whole when complete.
        if matches!(self.items[index].kind, Kind::Call { custom: false, .. }) {
            let id = self.items[index].id.clone();
            out.push_str(&self.emit.emit(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": index, "delta": fragment}),
            ));
        }
        out
    }

    /// Closes every open item whose kind `which` selects, in output order.
    fn close_where(&mut self, which: impl Fn(&Kind) -> bool) -> String {
        let open: Vec<usize> =
            (0..self.items.len()).filter(|&i| self.items[i].done.is_none() && which(&self.items[i].kind)).collect();
        open.into_iter().map(|i| self.close(i)).collect()
    }

    /// The events that end the item at `index`, ending with its `output_item.done`.
    fn close(&mut self, index: usize) -> String {
        let incomplete = status_of(self.finish_reason.as_deref()).0 == "incomplete";
        let Item { id, kind, text, .. } = &self.items[index];
        let (id, text) = (id.clone(), text.clone());
        let mut out = String::new();
        let item = match kind {
            Kind::Reasoning { summary, encrypted } => {
                let encrypted = encrypted.clone();
                if *summary {
                    out.push_str(&self.emit.emit(
                        "response.reasoning_summary_text.done",
                        json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                    ));
                    out.push_str(&self.emit.emit(
                        "response.reasoning_summary_part.done",
                        json!({"item_id": id, "output_index": index, "summary_index": 0,
                               "part": {"type": "summary_text", "text": text}}),
                    ));
                }
                reasoning_item(&id, &text, encrypted.as_deref())
            }
            Kind::Message => {
                let common = json!({"item_id": id, "output_index": index, "content_index": 0});
                let mut done = common.clone();
                done["text"] = Value::String(text.clone());
                done["logprobs"] = json!([]);
                out.push_str(&self.emit.emit("response.output_text.done", done));
                let mut part = common;
                part["part"] = output_text(&text);
                out.push_str(&self.emit.emit("response.content_part.done", part));
                message_item(&id, if incomplete { "incomplete" } else { "completed" }, vec![output_text(&text)])
            }
            Kind::Call { call_id, name, custom, .. } => {
                let (call_id, name, custom) = (call_id.clone(), name.clone(), *custom);
                let item = self.shell.tools.call_item(&id, &call_id, &name, &text, "completed");
                if custom {
                    let input = custom_input(&text);
                    out.push_str(&self.emit.emit(
                        "response.custom_tool_call_input.delta",
                        json!({"item_id": id, "output_index": index, "delta": input}),
                    ));
                    out.push_str(&self.emit.emit(
                        "response.custom_tool_call_input.done",
                        json!({"item_id": id, "output_index": index, "input": input}),
                    ));
                } else {
                    out.push_str(&self.emit.emit(
                        "response.function_call_arguments.done",
                        json!({"item_id": id, "output_index": index, "name": item["name"], "arguments": text}),
                    ));
                }
                item
            }
        };
        out.push_str(&self.emit.emit("response.output_item.done", json!({"output_index": index, "item": item})));
        self.items[index].done = Some(item);
        out
    }

    /// The answer is whole: every open item ends, then `response.completed` (or
    /// `response.incomplete`) with the whole output and the usage.
    fn complete(&mut self) -> Vec<u8> {
        let mut out = self.close_where(|_| true);
        let (status, incomplete) = status_of(self.finish_reason.as_deref());
        let output = self.items.iter().filter_map(|i| i.done.clone()).collect();
        let response = self.shell.response(status, output, self.usage.as_ref(), incomplete, None);
        let kind = if status == "incomplete" { "response.incomplete" } else { "response.completed" };
        out.push_str(&self.emit.emit(kind, json!({"response": response})));
        self.closed = true;
        out.into_bytes()
    }
}
