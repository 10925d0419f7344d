//! The relay of a Databricks chat stream to a Messages client: each chunk, normalised by the chat
//! path (`databricks::normalize_chunk`), becomes the Anthropic events it implies, sent at once.
//!
//! The order is the one the SDKs' accumulators (`messages.stream().finalMessage()`) need:
//! `message_start` first (on the first chunk); then, for each content block in turn,
//! `content_block_start`, its deltas (`thinking_delta` and `signature_delta`, `text_delta`,
//! `input_json_delta`), `content_block_stop`, with indices counting up from 0; at the end
//! `message_delta` (stop reason and the whole usage) and `message_stop`. Blocks never
//! interleave: the first tool call streams its arguments as they come, and further calls that
//! Databricks interleaves with it are held and sent whole when the choice finishes. A failure
//! ends the stream with an `error` event.
//!
//! The interface is `stream::ChatStreamRelay`'s.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::request::MessagesRequest;
use super::translate::stop_reason;
use super::{error_event, event, message_id, Usage};
use crate::databricks::{normalize_chunk, Chunk, StreamChunk};
use crate::openai::ApiError;
use crate::secret::Secret;
use crate::sse::SseParser;
use crate::wire::StreamRelay;

/// The content block being streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Open {
    Nothing,
    Text,
    Thinking,
    /// A tool call, by its chat `index`.
    Tool(u64),
}

/// A tool call that cannot stream yet: another block is open.
#[derive(Debug, Default)]
struct HeldCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

#[derive(Debug)]
pub struct TranslatedStreamRelay {
    parser: SseParser,
    model_group: String,
    secrets: Vec<Secret>,
    show_thinking: bool,
    stop_sequences: Vec<String>,
    /// The prompt's estimated tokens, shown while Databricks has reported none.
    prompt_estimate: u64,
    usage: Option<Usage>,
    id: Option<String>,
    started: bool,
    open: Open,
    /// The next block's index.
    next_index: u64,
    /// Tool calls already given a block (open or closed), by chat index.
    streamed_calls: Vec<u64>,
    held: BTreeMap<u64, HeldCall>,
    /// The choice finished: its stop reason and matched stop sequence.
    stop: Option<(&'static str, Value)>,
    generated_chars: u64,
    chunks: u64,
    closed: bool,
    error: Option<ApiError>,
}

impl TranslatedStreamRelay {
    /// `prompt_estimate` stands in for the input tokens until Databricks reports its usage.
    pub fn new(model_group: &str, req: &MessagesRequest, secrets: Vec<Secret>, prompt_estimate: u64) -> Self {
        TranslatedStreamRelay {
            parser: SseParser::new(),
            model_group: model_group.to_string(),
            secrets,
            show_thinking: req.shows_thinking(),
            stop_sequences: req.stop_sequences().map(str::to_string).collect(),
            prompt_estimate,
            usage: None,
            id: None,
            started: false,
            open: Open::Nothing,
            next_index: 0,
            streamed_calls: Vec::new(),
            held: BTreeMap::new(),
            stop: None,
            generated_chars: 0,
            chunks: 0,
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
                out.extend(self.complete());
                break;
            }
            let secrets: Vec<&str> = self.secrets.iter().map(Secret::expose).collect();
            match normalize_chunk(&data, &self.model_group, &secrets) {
                Chunk::Data(chunk) => self.relay_chunk(chunk, &mut out),
                Chunk::Error(error) => out.extend(self.fail(error)),
                Chunk::Malformed => {
                    out.extend(self.fail(ApiError::bad_gateway("Databricks sent a malformed stream chunk")))
                }
            }
        }
        out
    }

    fn relay_chunk(&mut self, StreamChunk { chunk, usage, generated_chars, .. }: StreamChunk, out: &mut Vec<u8>) {
        self.chunks += 1;
        self.generated_chars += generated_chars;
        if let Some(usage) = Usage::from_chat(usage.as_ref()) {
            self.usage = Some(usage);
        }
        if !self.started {
            self.start(&chunk, out);
        }
        if self.stop.is_some() {
            return; // a usage-only chunk after the finish, or a second choice's
        }
        let Some(choice) = chunk.get("choices").and_then(Value::as_array).and_then(|c| c.first()) else {
            return;
        };
        if let Some(delta) = choice.get("delta").and_then(Value::as_object) {
            self.delta(delta, out);
        }
        if choice.get("finish_reason").is_some_and(|r| !r.is_null()) {
            self.close_block(out);
            self.flush_held(out);
            self.stop = Some(stop_reason(choice, &self.stop_sequences));
        }
    }

    fn start(&mut self, chunk: &Map<String, Value>, out: &mut Vec<u8>) {
        self.started = true;
        let id = message_id(chunk.get("id").and_then(Value::as_str));
        let mut usage = self.usage.unwrap_or(Usage { input_tokens: self.prompt_estimate, ..Usage::default() });
        usage.output_tokens = 0;
        let message = json!({"type": "message_start", "message": {
            "id": id, "type": "message", "role": "assistant", "model": self.model_group, "content": [],
            "stop_reason": null, "stop_sequence": null, "usage": usage.to_json()}});
        self.id = Some(id);
        out.extend(event("message_start", &message.to_string()).into_bytes());
    }

    fn delta(&mut self, delta: &Map<String, Value>, out: &mut Vec<u8>) {
        if self.show_thinking {
            match delta.get("thinking_blocks").and_then(Value::as_array) {
                Some(blocks) => {
                    for block in blocks {
                        self.thinking_block(block, out);
                    }
                }
                None => {
                    if let Some(text) = delta.get("reasoning_content").and_then(Value::as_str).filter(|t| !t.is_empty())
                    {
                        self.open_block(Open::Thinking, out);
                        self.delta_event(json!({"type": "thinking_delta", "thinking": text}), out);
                    }
                }
            }
        }
        if let Some(text) = delta.get("content").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            self.open_block(Open::Text, out);
            self.delta_event(json!({"type": "text_delta", "text": text}), out);
        }
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            self.tool_fragment(call, out);
        }
    }

    fn thinking_block(&mut self, block: &Value, out: &mut Vec<u8>) {
        match block.get("type").and_then(Value::as_str) {
            Some("thinking") => {
                if let Some(text) = block.get("thinking").and_then(Value::as_str).filter(|t| !t.is_empty()) {
                    self.open_block(Open::Thinking, out);
                    self.delta_event(json!({"type": "thinking_delta", "thinking": text}), out);
                }
                if let Some(signature) = block.get("signature").and_then(Value::as_str).filter(|s| !s.is_empty()) {
                    self.open_block(Open::Thinking, out);
                    self.delta_event(json!({"type": "signature_delta", "signature": signature}), out);
                }
            }
            Some("redacted_thinking") => {
                self.close_block(out);
                let index = self.next_index;
                self.next_index += 1;
                let start = json!({"type": "content_block_start", "index": index,
                    "content_block": {"type": "redacted_thinking", "data": block.get("data")}});
                out.extend(event("content_block_start", &start.to_string()).into_bytes());
                let stop = json!({"type": "content_block_stop", "index": index});
                out.extend(event("content_block_stop", &stop.to_string()).into_bytes());
            }
            _ => {}
        }
    }

    fn tool_fragment(&mut self, call: &Value, out: &mut Vec<u8>) {
        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
        let function = call.get("function");
        let name = function.and_then(|f| f.get("name")).and_then(Value::as_str).unwrap_or("");
        let arguments = function.and_then(|f| f.get("arguments")).and_then(Value::as_str).unwrap_or("");
        let id = call.get("id").and_then(Value::as_str);
        if self.open == Open::Tool(index) {
            self.arguments(arguments, out);
            return;
        }
        let fresh = !self.streamed_calls.contains(&index) && !self.held.contains_key(&index);
        let can_stream = !matches!(self.open, Open::Tool(_)) && self.held.is_empty();
        if fresh && can_stream {
            self.close_block(out);
            self.open_tool(index, id, name, out);
            self.arguments(arguments, out);
            return;
        }
        if self.streamed_calls.contains(&index) {
            // A fragment for a call whose block was closed by other content: Databricks does
            // not send these; there is no block left to put it in.
            return;
        }
        let held = self.held.entry(index).or_default();
        if held.id.is_none() {
            held.id = id.map(str::to_string);
        }
        held.name.push_str(name);
        held.arguments.push_str(arguments);
    }

    fn open_tool(&mut self, index: u64, id: Option<&str>, name: &str, out: &mut Vec<u8>) {
        let id = id.map_or_else(|| message_id(None).replacen("msg_", "toolu_", 1), str::to_string);
        let start = json!({"type": "content_block_start", "index": self.next_index,
            "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}});
        out.extend(event("content_block_start", &start.to_string()).into_bytes());
        self.streamed_calls.push(index);
        self.open = Open::Tool(index);
    }

    fn arguments(&mut self, fragment: &str, out: &mut Vec<u8>) {
        if !fragment.is_empty() {
            self.delta_event(json!({"type": "input_json_delta", "partial_json": fragment}), out);
        }
    }

    /// Sends the held tool calls, each whole, in their chat order.
    fn flush_held(&mut self, out: &mut Vec<u8>) {
        for (index, call) in std::mem::take(&mut self.held) {
            self.open_tool(index, call.id.as_deref(), &call.name, out);
            self.arguments(&call.arguments, out);
            self.close_block(out);
        }
    }

    /// Opens a text or thinking block unless one of that kind is open.
    fn open_block(&mut self, kind: Open, out: &mut Vec<u8>) {
        if self.open == kind {
            return;
        }
        self.close_block(out);
        let block = match kind {
            Open::Thinking => json!({"type": "thinking", "thinking": "", "signature": ""}),
            _ => json!({"type": "text", "text": ""}),
        };
        let start = json!({"type": "content_block_start", "index": self.next_index, "content_block": block});
        out.extend(event("content_block_start", &start.to_string()).into_bytes());
        self.open = kind;
    }

    fn delta_event(&mut self, delta: Value, out: &mut Vec<u8>) {
        let data = json!({"type": "content_block_delta", "index": self.next_index, "delta": delta});
        out.extend(event("content_block_delta", &data.to_string()).into_bytes());
    }

    fn close_block(&mut self, out: &mut Vec<u8>) {
        if self.open == Open::Nothing {
            return;
        }
        let stop = json!({"type": "content_block_stop", "index": self.next_index});
        out.extend(event("content_block_stop", &stop.to_string()).into_bytes());
        self.open = Open::Nothing;
        self.next_index += 1;
    }

    /// The stream is over: `message_delta` and `message_stop` if the choice finished, else an
    /// error event.
    fn complete(&mut self) -> Vec<u8> {
        if self.closed {
            return Vec::new();
        }
        let Some((stop_reason, stop_sequence)) = self.stop.clone() else {
            return self.fail(ApiError::bad_gateway("Databricks ended the stream before the answer was complete"));
        };
        let mut out = Vec::new();
        let usage = self.usage.unwrap_or(Usage {
            input_tokens: self.prompt_estimate,
            output_tokens: self.generated_chars.div_ceil(4),
            ..Usage::default()
        });
        let delta = json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence}, "usage": usage.to_json()});
        out.extend(event("message_delta", &delta.to_string()).into_bytes());
        out.extend(event("message_stop", r#"{"type":"message_stop"}"#).into_bytes());
        self.closed = true;
        out
    }

    /// The last usage Databricks reported (cumulative), `None` if it sent none.
    pub fn anthropic_usage(&self) -> Option<Usage> {
        self.usage
    }
}

/// The relay's part in the pipeline (`wire::StreamRelay`).
impl StreamRelay for TranslatedStreamRelay {
    /// Feeds upstream bytes; returns the events they make, framed for the client.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let events = self.parser.feed(bytes);
        self.relay(events)
    }

    /// The upstream ended (with or without `[DONE]`): the Message is completed if its choice
    /// finished, else the stream ends with an error event.
    fn finish(&mut self) -> Vec<u8> {
        let events = self.parser.finish();
        let mut out = self.relay(events);
        out.extend(self.complete());
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

    fn is_closed(&self) -> bool {
        self.closed
    }

    /// Upstream chunks relayed.
    fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The Message's id (`msg_...`), made from the first chunk's.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anthropic::parse_request;

    fn request(thinking: bool) -> MessagesRequest {
        let mut v = json!({"model": "group", "max_tokens": 4000, "stream": true,
            "messages": [{"role": "user", "content": "x"}], "stop_sequences": ["END"]});
        if thinking {
            v["thinking"] = json!({"type": "enabled", "budget_tokens": 2048});
        }
        parse_request(v.to_string().as_bytes()).unwrap()
    }

    fn chunk(delta: Value, finish: Option<&str>, usage: Option<(u64, u64)>) -> String {
        let usage = usage
            .map_or(Value::Null, |(p, c)| json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}));
        let data = json!({"id": "chatcmpl_abc", "object": "chat.completion.chunk", "model": "served",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}], "usage": usage});
        format!("data: {data}\n\n")
    }

    fn parse(out: &[u8]) -> Vec<(String, Value)> {
        let text = std::str::from_utf8(out).unwrap();
        text.split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (name, data) = e.split_once('\n').unwrap();
                let name = name.strip_prefix("event: ").unwrap().to_string();
                let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
                assert_eq!(data["type"], name.as_str(), "the event name is the data's type");
                (name, data)
            })
            .collect()
    }

    fn run(input: &str, req: &MessagesRequest, cut: usize) -> (Vec<(String, Value)>, TranslatedStreamRelay) {
        let mut relay = TranslatedStreamRelay::new("group", req, vec![], 77);
        let mut out = relay.feed(&input.as_bytes()[..cut]);
        out.extend(relay.feed(&input.as_bytes()[cut..]));
        out.extend(relay.finish());
        (parse(&out), relay)
    }

    /// Accumulates events as the Anthropic SDK's `MessageStream` does, checking the order it
    /// requires, and returns the final Message (what `finalMessage()` resolves to).
    fn final_message(events: &[(String, Value)]) -> Value {
        let mut message: Option<Value> = None;
        let mut open: Option<u64> = None;
        let mut json_buf: BTreeMap<u64, String> = BTreeMap::new();
        let mut stopped = false;
        for (name, data) in events {
            assert!(!stopped, "{name} after message_stop");
            if name == "message_start" {
                assert!(message.is_none(), "a second message_start");
                let m = data["message"].clone();
                assert_eq!(m["content"], json!([]));
                assert!(m["usage"]["input_tokens"].is_u64() && m["usage"]["output_tokens"].is_u64());
                message = Some(m);
                continue;
            }
            let m = message.as_mut().unwrap_or_else(|| panic!("{name} before message_start"));
            match name.as_str() {
                "content_block_start" => {
                    assert_eq!(open, None, "a block started inside another");
                    let index = data["index"].as_u64().unwrap();
                    assert_eq!(index as usize, m["content"].as_array().unwrap().len(), "indices count up from 0");
                    m["content"].as_array_mut().unwrap().push(data["content_block"].clone());
                    open = Some(index);
                }
                "content_block_delta" => {
                    let index = data["index"].as_u64().unwrap();
                    assert_eq!(open, Some(index), "a delta outside its block");
                    let block = &mut m["content"][index as usize];
                    let delta = &data["delta"];
                    match (delta["type"].as_str().unwrap(), block["type"].as_str().unwrap()) {
                        ("text_delta", "text") => {
                            block["text"] =
                                format!("{}{}", block["text"].as_str().unwrap(), delta["text"].as_str().unwrap()).into()
                        }
                        ("thinking_delta", "thinking") => {
                            block["thinking"] = format!(
                                "{}{}",
                                block["thinking"].as_str().unwrap(),
                                delta["thinking"].as_str().unwrap()
                            )
                            .into()
                        }
                        ("signature_delta", "thinking") => block["signature"] = delta["signature"].clone(),
                        ("input_json_delta", "tool_use") => {
                            let buf = json_buf.entry(index).or_default();
                            buf.push_str(delta["partial_json"].as_str().unwrap());
                        }
                        (d, b) => panic!("{d} into a {b} block"),
                    }
                }
                "content_block_stop" => {
                    let index = data["index"].as_u64().unwrap();
                    assert_eq!(open, Some(index));
                    if let Some(buf) = json_buf.get(&index) {
                        m["content"][index as usize]["input"] = serde_json::from_str(buf).unwrap();
                    }
                    open = None;
                }
                "message_delta" => {
                    assert_eq!(open, None, "message_delta inside a block");
                    m["stop_reason"] = data["delta"]["stop_reason"].clone();
                    m["stop_sequence"] = data["delta"]["stop_sequence"].clone();
                    let usage = data["usage"].as_object().expect("message_delta carries usage");
                    for (k, v) in usage {
                        m["usage"][k] = v.clone();
                    }
                }
                "message_stop" => stopped = true,
                other => panic!("unexpected event {other}"),
            }
        }
        assert!(stopped, "no message_stop: finalMessage() would reject");
        message.unwrap()
    }

    #[test]
    fn a_text_stream_becomes_a_message_at_every_cut() {
        let input = [
            chunk(json!({"role": "assistant", "content": ""}), None, Some((9, 0))),
            chunk(json!({"content": "Hel"}), None, Some((9, 1))),
            chunk(json!({"content": "lo"}), Some("stop"), Some((9, 2))),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        for cut in 0..input.len() {
            let (events, relay) = run(&input, &request(false), cut);
            let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(
                names,
                [
                    "message_start",
                    "content_block_start",
                    "content_block_delta",
                    "content_block_delta",
                    "content_block_stop",
                    "message_delta",
                    "message_stop"
                ],
                "cut {cut}"
            );
            let m = final_message(&events);
            assert_eq!(m["id"], "msg_abc");
            assert_eq!(m["model"], "group");
            assert_eq!(m["content"], json!([{"type": "text", "text": "Hello"}]));
            assert_eq!(m["stop_reason"], "end_turn");
            assert_eq!(
                m["usage"],
                json!({"input_tokens": 9, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0, "output_tokens": 2})
            );
            assert_eq!(relay.anthropic_usage().map(|u| u.output_tokens), Some(2));
            assert!(relay.error().is_none() && relay.is_closed());
            assert_eq!(relay.chunks(), 3);
        }
    }

    #[test]
    fn thinking_then_text_as_databricks_streams_claude() {
        let reasoning = |text: &str, sig: &str| json!({"content": [{"type": "reasoning", "summary": [{"type": "summary_text", "text": text, "signature": sig}]}]});
        let input = [
            chunk(json!({"role": "assistant", "content": ""}), None, None),
            chunk(reasoning("Let me ", ""), None, None),
            chunk(reasoning("think.", ""), None, None),
            chunk(reasoning("", "sig-1"), None, None),
            chunk(json!({"content": [{"type": "reasoning", "summary": [{"type": "summary_encrypted_text", "data": "enc=="}]}]}), None, None),
            chunk(json!({"content": "The answer"}), None, None),
            chunk(json!({"content": " is 4."}), Some("stop"), None),
            "data: {\"id\":\"chatcmpl_abc\",\"choices\":[],\"usage\":{\"prompt_tokens\":20,\"completion_tokens\":9,\"cache_read_input_tokens\":16}}\n\n".to_string(),
        ]
        .concat();
        let (events, relay) = run(&input, &request(true), 0);
        let m = final_message(&events);
        assert_eq!(
            m["content"],
            json!([
                {"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"},
                {"type": "redacted_thinking", "data": "enc=="},
                {"type": "text", "text": "The answer is 4."}
            ])
        );
        // No usage until the end: message_start shows the estimate, message_delta the real counts.
        assert_eq!(events[0].1["message"]["usage"]["input_tokens"], 77);
        assert_eq!(
            m["usage"],
            json!({"input_tokens": 4, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 16, "output_tokens": 9})
        );
        assert_eq!(relay.anthropic_usage().map(|u| u.prompt_tokens()), Some(20));
        // Without `thinking` in the request, no thinking is shown.
        let (events, _) = run(&input, &request(false), 0);
        assert_eq!(final_message(&events)["content"], json!([{"type": "text", "text": "The answer is 4."}]));
    }

    #[test]
    fn interleaved_parallel_tool_calls_become_consecutive_blocks() {
        let header = |i: u64, id: &str| json!({"index": i, "id": id, "type": "function", "function": {"name": "get_weather", "arguments": ""}});
        let fragment =
            |i: u64, a: &str| json!({"index": i, "id": null, "type": null, "function": {"name": null, "arguments": a}});
        let input = [
            chunk(
                json!({"role": "assistant", "content": null, "tool_calls": [header(0, "call_a"), header(1, "call_b")]}),
                None,
                Some((30, 0)),
            ),
            chunk(json!({"content": null, "tool_calls": [fragment(0, "{\"city\":")]}), None, Some((30, 1))),
            chunk(json!({"content": null, "tool_calls": [fragment(1, "{\"city\":")]}), None, Some((30, 2))),
            chunk(json!({"content": null, "tool_calls": [fragment(0, "\"Paris\"}")]}), None, Some((30, 3))),
            chunk(
                json!({"content": null, "tool_calls": [fragment(1, "\"Rome\"}")]}),
                Some("tool_calls"),
                Some((30, 4)),
            ),
            "data: [DONE]\n\n".to_string(),
        ]
        .concat();
        for cut in (0..input.len()).step_by(11) {
            let (events, relay) = run(&input, &request(false), cut);
            let m = final_message(&events);
            assert_eq!(
                m["content"],
                json!([
                    {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {"city": "Paris"}},
                    {"type": "tool_use", "id": "call_b", "name": "get_weather", "input": {"city": "Rome"}}
                ])
            );
            assert_eq!(m["stop_reason"], "tool_use");
            assert_eq!(m["usage"]["output_tokens"], 4);
            assert_eq!(relay.generated_chars(), 2 * 11 + 8 + 8 + 8 + 7);
        }
        // The first call streams as it comes: its first fragment leaves with its own chunk.
        let mut relay = TranslatedStreamRelay::new("group", &request(false), vec![], 0);
        let first: String = input.split_inclusive("\n\n").take(2).collect();
        let events = parse(&relay.feed(first.as_bytes()));
        assert_eq!(
            events.last().unwrap().1["delta"],
            json!({"type": "input_json_delta", "partial_json": "{\"city\":"})
        );
    }

    #[test]
    fn text_then_a_tool_call_and_a_stop_sequence() {
        let input = [
            chunk(json!({"role": "assistant", "content": "Checking"}), None, None),
            chunk(json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}), Some("tool_calls"), None),
        ]
        .concat();
        let (events, relay) = run(&input, &request(false), 0);
        let m = final_message(&events);
        assert_eq!(
            m["content"],
            json!([{"type": "text", "text": "Checking"}, {"type": "tool_use", "id": "call_1", "name": "f", "input": {}}])
        );
        // Databricks sent no usage: the estimate is shown and none is reported.
        assert_eq!(m["usage"]["input_tokens"], 77);
        assert_eq!(m["usage"]["output_tokens"], (8u64 + 1 + 2).div_ceil(4));
        assert_eq!(relay.anthropic_usage(), None);
        let stop = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"done\"},\"finish_reason\":\"stop\",\"stop_reason\":\"END\"}]}\n\n";
        let (events, _) = run(stop, &request(false), 0);
        let m = final_message(&events);
        assert_eq!((m["stop_reason"].as_str(), m["stop_sequence"].as_str()), (Some("stop_sequence"), Some("END")));
        let length = chunk(json!({"content": "cut"}), Some("length"), None);
        assert_eq!(final_message(&run(&length, &request(false), 0).0)["stop_reason"], "max_tokens");
    }

    #[test]
    fn failures_end_the_stream_with_an_error_event() {
        // Cut before the choice finished.
        let (events, relay) = run(&chunk(json!({"content": "Hi"}), None, Some((3, 1))), &request(false), 0);
        let (name, data) = events.last().unwrap();
        assert_eq!((name.as_str(), data["error"]["type"].as_str()), ("error", Some("api_error")));
        assert!(!events.iter().any(|(n, _)| n == "message_stop"));
        assert_eq!(relay.error().map(|e| e.status), Some(502));
        assert_eq!(relay.anthropic_usage().map(|u| u.output_tokens), Some(1));
        // An error inside the stream, secrets removed.
        let mut relay =
            TranslatedStreamRelay::new("group", &request(false), vec![Secret::new("tok-secret-value".into())], 0);
        let mut out = relay.feed(chunk(json!({"content": "Hi"}), None, None).as_bytes());
        out.extend(relay.feed(b"data: {\"error_code\":\"INTERNAL_ERROR\",\"message\":\"boom tok-secret-value\"}\n\n"));
        out.extend(relay.finish());
        let events = parse(&out);
        let (name, data) = events.last().unwrap();
        assert_eq!(name, "error");
        assert!(data["error"]["message"].as_str().unwrap().contains("boom [REDACTED]"));
        assert_eq!(events.iter().filter(|(n, _)| n == "error").count(), 1);
        // Malformed, and nothing after an error or after the end.
        let mut relay = TranslatedStreamRelay::new("group", &request(false), vec![], 0);
        let out = relay.feed(b"data: {\"oops\": \n\n");
        assert!(parse(&out)[0].1["error"]["message"].as_str().unwrap().contains("malformed"));
        assert!(relay.finish().is_empty());
        assert!(relay.fail(ApiError::gateway_timeout("late")).is_empty());
    }
}
