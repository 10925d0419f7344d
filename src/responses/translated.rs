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
use crate::wire::StreamRelay;

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

    /// The last usage the upstream reported (cumulative on Databricks).
    pub fn responses_usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The relay's part in the pipeline (`wire::StreamRelay`).
impl StreamRelay for TranslatedRelay {
    /// Feeds upstream bytes; returns what to send to the client now.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = self.start();
        let events = self.parser.feed(bytes);
        out.extend(self.relay(events));
        out
    }

    /// The upstream ended: the final events, or a failure if the answer was cut short.
    fn finish(&mut self) -> Vec<u8> {
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
    fn fail(&mut self, error: ApiError) -> Vec<u8> {
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
    fn is_closed(&self) -> bool {
        self.closed
    }

    fn chunks(&self) -> u64 {
        self.chunks
    }

    fn id(&self) -> Option<&str> {
        Some(&self.shell.id)
    }

    /// Characters of text, reasoning and tool calls relayed, to estimate usage never sent.
    fn generated_chars(&self) -> u64 {
        self.generated_chars
    }

    /// The error that ended the stream, if one did.
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
    use crate::responses::events::client::{read, Client};
    use crate::responses::parse_request;

    fn shell(body: Value) -> ResponseShell {
        parse_request(body.to_string().as_bytes()).unwrap().shell("resp_t1".into(), 1_700_000_000)
    }

    fn weather_shell() -> ResponseShell {
        shell(json!({"model": "claude", "input": "hi", "stream": true,
                     "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}]}))
    }

    /// A chat chunk as Databricks streams it, with cumulative usage.
    fn chunk(delta: Value, finish: Option<&str>, completion: u64) -> String {
        let chunk = json!({"id": "chatcmpl_1", "object": "chat.completion.chunk", "created": 1, "model": "served",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
            "usage": {"prompt_tokens": 12, "completion_tokens": completion, "total_tokens": 12 + completion}});
        format!("data: {chunk}\n\n")
    }

    fn run(shell: ResponseShell, input: &str, cut: usize) -> (Client, TranslatedRelay) {
        let mut relay = TranslatedRelay::new(shell, vec![]);
        let mut out = relay.feed(&input.as_bytes()[..cut]);
        out.extend(relay.feed(&input.as_bytes()[cut..]));
        out.extend(relay.finish());
        (read(&out), relay)
    }

    /// What every complete stream must give: the SDK's snapshot equals the final Response's
    /// output, and Codex's history (`output_item.done`) too.
    fn assert_whole(client: &Client) {
        let last = client.last.as_ref().unwrap();
        assert_eq!(client.built.as_ref().unwrap()["output"], last["output"], "the deltas build the final output");
        assert_eq!(Value::Array(client.done_items.clone()), last["output"], "output_item.done gives every item");
        assert_eq!(last["id"], "resp_t1");
        for field in ["input_tokens", "output_tokens", "total_tokens"] {
            assert!(last["usage"][field].is_u64(), "Codex reads usage.{field}");
        }
        assert!(last["usage"]["input_tokens_details"]["cached_tokens"].is_u64());
        assert!(last["usage"]["output_tokens_details"]["reasoning_tokens"].is_u64());
    }

    #[test]
    fn a_text_stream_is_the_openai_event_sequence_at_every_cut() {
        let input = format!(
            "{}{}{}{}data: [DONE]\n\n",
            chunk(json!({"role": "assistant", "content": ""}), None, 0),
            chunk(json!({"content": "Hel"}), None, 1),
            chunk(json!({"content": "lo"}), None, 2),
            chunk(json!({"content": null}), Some("stop"), 2),
        );
        // The SSE parser is checked at every cut (`sse`); here a cut every few bytes suffices.
        for cut in (0..input.len()).step_by(7) {
            let (client, relay) = run(weather_shell(), &input, cut);
            assert_eq!(
                client.types(),
                [
                    "response.created",
                    "response.in_progress",
                    "response.output_item.added",
                    "response.content_part.added",
                    "response.output_text.delta",
                    "response.output_text.delta",
                    "response.output_text.done",
                    "response.content_part.done",
                    "response.output_item.done",
                    "response.completed"
                ],
                "cut {cut}"
            );
            assert_whole(&client);
            let last = client.last.as_ref().unwrap();
            assert_eq!(last["status"], "completed");
            assert_eq!(last["output"][0]["content"][0]["text"], "Hello");
            assert_eq!(last["output"][0]["id"], "msg_t100");
            assert_eq!(last["model"], "claude");
            assert_eq!(last["usage"]["output_tokens"], 2);
            assert_eq!(client.text, "Hello");
            assert_eq!(client.events[0]["response"]["status"], "in_progress");
            assert_eq!(client.events[0]["response"]["usage"], Value::Null);
            assert_eq!(relay.responses_usage().map(|u| u.total_tokens()), Some(14));
            assert_eq!(relay.generated_chars(), 5);
            assert!(relay.is_closed() && relay.error().is_none());
        }
    }

    #[test]
    fn thinking_then_text_gives_a_reasoning_item_carrying_the_signature() {
        let reasoning = |text: &str, signature: &str| json!({"content": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": text, "signature": signature}]}]});
        let input = [
            chunk(json!({"role": "assistant", "content": ""}), None, 0),
            chunk(reasoning("Let me ", ""), None, 1),
            chunk(reasoning("think.", ""), None, 2),
            chunk(reasoning("", "sig-1"), None, 2),
            chunk(json!({"content": [{"type": "reasoning", "summary": [{"type": "summary_encrypted_text", "data": "Enc=="}]}]}), None, 2),
            chunk(json!({"content": "4"}), Some("stop"), 3),
        ]
        .concat();
        let (client, _) = run(weather_shell(), &input, input.len() / 3);
        assert_whole(&client);
        let last = client.last.clone().unwrap();
        assert_eq!(
            last["output"],
            json!([
                {"id": "rs_t100", "type": "reasoning", "summary": [{"type": "summary_text", "text": "Let me think."}],
                 "encrypted_content": "gateway-thinking-signature:sig-1"},
                {"id": "rs_t101", "type": "reasoning", "summary": [], "encrypted_content": "gateway-redacted-thinking:Enc=="},
                {"id": "msg_t102", "type": "message", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "annotations": [], "logprobs": [], "text": "4"}]}])
        );
        let types = client.types();
        assert_eq!(
            types[2..10],
            [
                "response.output_item.added",
                "response.reasoning_summary_part.added",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.delta",
                "response.reasoning_summary_text.done",
                "response.reasoning_summary_part.done",
                "response.output_item.done",
                "response.output_item.added"
            ]
        );
    }

    #[test]
    fn parallel_tool_calls_interleaved_become_function_call_items() {
        // As Databricks streams them: headers first, then fragments with nulls, interleaved.
        let header = |i: u64, id: &str| json!({"index": i, "id": id, "type": "function", "function": {"name": "get_weather", "arguments": ""}});
        let fragment =
            |i: u64, a: &str| json!({"index": i, "id": null, "type": null, "function": {"name": null, "arguments": a}});
        let input = [
            chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [header(0, "call_a"), header(1, "call_b")]}),
                None,
                0,
            ),
            chunk(json!({"content": null, "tool_calls": [fragment(0, "{\"city\":")]}), None, 1),
            chunk(json!({"content": null, "tool_calls": [fragment(1, "{\"city\":")]}), None, 2),
            chunk(json!({"content": null, "tool_calls": [fragment(0, "\"Paris\"}")]}), None, 3),
            chunk(json!({"content": null, "tool_calls": [fragment(1, "\"Rome\"}")]}), Some("tool_calls"), 4),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        for cut in [0, 100, input.len() / 2, input.len() - 3] {
            let (client, relay) = run(weather_shell(), &input, cut);
            assert_whole(&client);
            let last = client.last.as_ref().unwrap();
            assert_eq!(
                last["output"],
                json!([
                    {"id": "fc_t100", "type": "function_call", "status": "completed", "arguments": "{\"city\":\"Paris\"}",
                     "call_id": "call_a", "name": "get_weather"},
                    {"id": "fc_t101", "type": "function_call", "status": "completed", "arguments": "{\"city\":\"Rome\"}",
                     "call_id": "call_b", "name": "get_weather"}])
            );
            let added = &client.events[2];
            assert_eq!(added["item"]["status"], "in_progress");
            assert_eq!(added["item"]["arguments"], "");
            assert_eq!(client.types().iter().filter(|t| **t == "response.function_call_arguments.delta").count(), 4);
            let done: Vec<&Value> =
                client.events.iter().filter(|e| e["type"] == "response.function_call_arguments.done").collect();
            assert_eq!(
                (done[0]["name"].as_str(), done[1]["arguments"].as_str()),
                (Some("get_weather"), Some("{\"city\":\"Rome\"}"))
            );
            // Two names, two `{"city":`, `"Paris"}` and `"Rome"}`.
            assert_eq!(relay.generated_chars(), 2 * 11 + 2 * 8 + 8 + 7);
        }
    }

    #[test]
    fn text_before_a_tool_call_ends_its_message_first() {
        let input = [
            chunk(json!({"role": "assistant", "content": "Checking."}), None, 1),
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]}), Some("tool_calls"), 2),
        ]
        .concat();
        let (client, _) = run(weather_shell(), &input, 0);
        assert_whole(&client);
        let types = client.types();
        let message_done = types.iter().position(|t| *t == "response.content_part.done").unwrap();
        let call_added = types.iter().rposition(|t| *t == "response.output_item.added").unwrap();
        assert!(message_done < call_added, "{types:?}");
        assert_eq!(client.last.unwrap()["output"][1]["type"], "function_call");
    }

    #[test]
    fn custom_and_namespaced_tools_stream_as_their_own_items() {
        let shell = shell(json!({"model": "claude", "input": "x", "tools": [
            {"type": "custom", "name": "apply_patch"},
            {"type": "namespace", "name": "mcp__docs", "tools": [{"type": "function", "name": "search"}]}]}));
        let call = |i: u64, id: &str, name: &str, args: &str| json!({"tool_calls": [{"index": i, "id": id, "type": "function", "function": {"name": name, "arguments": args}}]});
        let input = [
            chunk(call(0, "call_p", "apply_patch", "{\"input\":"), None, 1),
            chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"*** Begin Patch\"}"}}]}), None, 2),
            chunk(call(1, "call_s", "mcp__docs__search", "{\"q\":\"x\"}"), Some("tool_calls"), 3),
        ]
        .concat();
        let (client, _) = run(shell, &input, 7);
        assert_whole(&client);
        let output = &client.last.as_ref().unwrap()["output"];
        assert_eq!(
            output[0],
            json!({"id": "ctc_t100", "type": "custom_tool_call", "status": "completed", "call_id": "call_p",
                   "name": "apply_patch", "input": "*** Begin Patch"})
        );
        assert_eq!((output[1]["name"].as_str(), output[1]["namespace"].as_str()), (Some("search"), Some("mcp__docs")));
        assert!(client.types().contains(&"response.custom_tool_call_input.done"));
        assert!(!client
            .events
            .iter()
            .any(|e| e["type"] == "response.function_call_arguments.delta" && e["output_index"] == 0));
    }

    #[test]
    fn an_answer_cut_by_max_tokens_ends_incomplete() {
        let input = [chunk(json!({"content": "Once upon"}), None, 2), chunk(json!({}), Some("length"), 2)].concat();
        let (client, _) = run(weather_shell(), &input, 0);
        assert_whole(&client);
        let last = client.last.clone().unwrap();
        assert_eq!(client.types().last(), Some(&"response.incomplete"));
        assert_eq!(
            (last["status"].as_str(), last["incomplete_details"]["reason"].as_str()),
            (Some("incomplete"), Some("max_output_tokens"))
        );
        assert_eq!(last["output"][0]["status"], "incomplete");
    }

    #[test]
    fn usage_in_a_last_chunk_without_choices_is_read() {
        let usage_only = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13,\"prompt_tokens_details\":{\"cached_tokens\":8}}}\n\n";
        let no_usage = |delta: Value, finish: Option<&str>| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}], "usage": null})
            )
        };
        let input = format!(
            "{}{}{usage_only}data: [DONE]\n\n",
            no_usage(json!({"content": "Hi"}), None),
            no_usage(json!({}), Some("stop"))
        );
        let (client, relay) = run(weather_shell(), &input, 0);
        assert_whole(&client);
        assert_eq!(client.last.unwrap()["usage"]["input_tokens_details"]["cached_tokens"], 8);
        assert_eq!(relay.responses_usage().map(|u| u.output_tokens), Some(4));
    }

    #[test]
    fn a_stream_cut_short_fails_with_response_failed_and_an_error_event() {
        let input =
            [chunk(json!({"role": "assistant", "content": ""}), None, 0), chunk(json!({"content": "Hel"}), None, 1)]
                .concat();
        let (client, relay) = run(weather_shell(), &input, 0);
        let types = client.types();
        assert_eq!(types[types.len() - 2..], ["response.failed", "error"]);
        let failed = client.last.as_ref().unwrap();
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["error"]["code"], "server_error");
        assert_eq!(failed["output"], json!([]), "only finished items are in a failed Response");
        let error = client.events.last().unwrap();
        assert_eq!((error["code"].as_str(), error["param"].clone()), (Some("server_error"), Value::Null));
        assert!(error["message"].as_str().unwrap().contains("before the answer was complete"));
        // The envelope the SDKs raise on.
        assert_eq!(error["error"]["type"], "api_error");
        assert_eq!(error["error"]["code"], "502");
        assert_eq!(relay.error().map(|e| e.status), Some(502));
        assert_eq!(relay.responses_usage().map(|u| u.output_tokens), Some(1));
        assert_eq!(relay.generated_chars(), 3);
    }

    #[test]
    fn an_upstream_error_in_the_stream_is_relayed_without_secrets() {
        let mut relay = TranslatedRelay::new(weather_shell(), vec![Secret::new("tok-secret-value".into())]);
        let mut out = relay.feed(chunk(json!({"content": "Hi"}), None, 1).as_bytes());
        out.extend(relay.feed(b"data: {\"error_code\":\"INTERNAL_ERROR\",\"message\":\"boom tok-secret-value\"}\n\n"));
        out.extend(relay.feed(chunk(json!({"content": "late"}), Some("stop"), 2).as_bytes()));
        out.extend(relay.finish());
        let client = read(&out);
        let failed = client.last.unwrap();
        assert!(failed["error"]["message"].as_str().unwrap().contains("boom [REDACTED]"), "{failed}");
        assert_eq!(client.text, "Hi", "nothing after the error");
        assert!(relay.is_closed());
        assert!(relay.fail(ApiError::gateway_timeout("late")).is_empty(), "nothing after the end");
        assert!(relay.finish().is_empty());
    }

    #[test]
    fn a_malformed_chunk_or_a_rate_limit_fail_with_openais_codes() {
        let (client, _) = run(weather_shell(), "data: {\"oops\": \n\n", 0);
        assert_eq!(client.last.unwrap()["error"]["code"], "server_error");
        let mut relay = TranslatedRelay::new(weather_shell(), vec![]);
        let start = relay.start();
        assert!(relay.start().is_empty(), "created and in_progress are sent once");
        let mut out = start;
        out.extend(relay.fail(ApiError::new(429, crate::openai::ErrorKind::RateLimit, "slow down")));
        let client = read(&out);
        assert_eq!(client.types(), ["response.created", "response.in_progress", "response.failed", "error"]);
        assert_eq!(client.last.unwrap()["error"]["code"], "rate_limit_exceeded");
    }
}
