//! The relay of a Databricks chat (or legacy completions) stream to the client, as a pure
//! state machine: bytes in (cut anywhere), normalised SSE bytes out, and what the stream said
//! about its usage. The runtime feeds it upstream reads and writes what it returns.
//!
//! Usage is shown as OpenAI shows it: not at all unless the client asked
//! (`stream_options.include_usage`), and then as `"usage": null` on every chunk and one last
//! chunk with `choices: []` carrying the whole usage, before `[DONE]`. Databricks repeats its
//! cumulative usage on every chunk; clients that add usage across chunks (LangChain) would
//! count it many times.

use serde_json::{Map, Value};

use crate::databricks::{normalize_chunk, normalize_chunk_fields, Chunk, ChunkFields, Field, StreamChunk};
use crate::openai::ApiError;
use crate::openai::Usage;
use crate::secret::Secret;
use crate::sse::{self, SseParser};
use crate::wire::StreamRelay;

const DONE: &str = "data: [DONE]\n\n";
/// The fields of the first chunk that the final usage chunk repeats.
const ENVELOPE: [&str; 5] = ["id", "object", "created", "model", "system_fingerprint"];

#[derive(Debug)]
pub struct ChatStreamRelay {
    parser: SseParser,
    model_group: String,
    /// Secrets scrubbed from error messages that arrive inside the stream.
    secrets: Vec<Secret>,
    /// The client asked for usage (`stream_options.include_usage`).
    include_usage: bool,
    /// The last usage object the upstream sent, as it came (token details included).
    usage: Option<UsageSeen>,
    /// `id`, `object`, `created`, `model` of the first chunk, for the usage chunk.
    envelope: Option<Map<String, Value>>,
    /// Characters of content and reasoning relayed, to estimate usage the upstream never sent.
    generated_chars: u64,
    chunks: u64,
    finished: bool,
    /// `[DONE]` was sent: nothing more goes to the client.
    closed: bool,
    error: Option<ApiError>,
    /// Chunks with choices take `normalize_chunk_fields` (off only to test it against the other).
    fast: bool,
}

/// A usage object as parsed with its chunk, or as the text it came as (parsed when read).
#[derive(Debug)]
enum UsageSeen {
    Value(Value),
    Text(String),
}

impl UsageSeen {
    fn value(&self) -> Option<Value> {
        match self {
            UsageSeen::Value(value) => Some(value.clone()),
            UsageSeen::Text(text) => serde_json::from_str(text).ok(),
        }
    }
}

impl ChatStreamRelay {
    pub fn new(model_group: &str, secrets: Vec<Secret>, include_usage: bool) -> Self {
        ChatStreamRelay {
            parser: SseParser::new(),
            model_group: model_group.to_string(),
            secrets,
            include_usage,
            usage: None,
            envelope: None,
            generated_chars: 0,
            chunks: 0,
            finished: false,
            closed: false,
            error: None,
            fast: true,
        }
    }
}

/// The relay's part in the pipeline (`wire::StreamRelay`).
impl StreamRelay for ChatStreamRelay {
    /// Feeds upstream bytes; returns what to send to the client now.
    fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let events = self.parser.feed(bytes);
        self.relay(events)
    }

    /// The upstream ended. Ends the client's stream with `[DONE]`, after an error event
    /// when the answer was cut before any choice finished.
    fn finish(&mut self) -> Vec<u8> {
        let events = self.parser.finish();
        let mut out = self.relay(events);
        if !self.closed && !self.finished {
            out.extend(self.fail(ApiError::bad_gateway("Databricks ended the stream before the answer was complete")));
        }
        out.extend(self.complete());
        out
    }

    /// The upstream failed (read error, idle timeout): an error event, then `[DONE]`.
    fn fail(&mut self, error: ApiError) -> Vec<u8> {
        if self.closed {
            return Vec::new();
        }
        let mut out = error.to_sse_event().into_bytes();
        self.error = Some(error);
        out.extend(self.close());
        out
    }

    /// True once the client's stream is complete: stop reading the upstream.
    fn is_closed(&self) -> bool {
        self.closed
    }

    /// The last usage the upstream reported (Databricks' usage is cumulative).
    fn usage(&self) -> Option<Usage> {
        Usage::from_value(self.usage.as_ref()?.value().as_ref())
    }

    fn chunks(&self) -> u64 {
        self.chunks
    }

    /// The stream's id (`chatcmpl_...`), from its first chunk.
    fn id(&self) -> Option<&str> {
        self.envelope.as_ref()?.get("id")?.as_str()
    }

    fn generated_chars(&self) -> u64 {
        self.generated_chars
    }

    /// The error that ended the stream, if one did.
    fn error(&self) -> Option<&ApiError> {
        self.error.as_ref()
    }
}

impl ChatStreamRelay {
    fn relay(&mut self, events: Vec<String>) -> Vec<u8> {
        let mut out = Vec::with_capacity(events.iter().map(|e| e.len() + 16).sum());
        for data in events {
            if self.closed {
                break;
            }
            if data.trim() == "[DONE]" {
                out.extend(self.complete());
                break;
            }
            if self.fast {
                if let Some(chunk) = normalize_chunk_fields(&data, &self.model_group) {
                    self.relay_fields(chunk, &mut out);
                    continue;
                }
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

    fn relay_chunk(
        &mut self,
        StreamChunk { mut chunk, usage, finished, generated_chars }: StreamChunk,
        out: &mut Vec<u8>,
    ) {
        self.chunks += 1;
        self.generated_chars += generated_chars;
        self.finished |= finished;
        if let Some(usage) = usage {
            self.usage = Some(UsageSeen::Value(usage));
        }
        if self.envelope.is_none() {
            let envelope = ENVELOPE.iter().filter_map(|k| Some((k.to_string(), chunk.get(*k)?.clone()))).collect();
            self.envelope = Some(envelope);
        }
        // A chunk without choices carried only usage (the usage chunk comes at the end).
        if chunk.get("choices").and_then(Value::as_array).is_some_and(Vec::is_empty) {
            return;
        }
        if self.include_usage {
            chunk.insert("usage".into(), Value::Null);
        }
        sse::write_event(out, &chunk);
    }

    /// `relay_chunk` for a chunk normalised the fast way: the same state, the same bytes.
    fn relay_fields(&mut self, mut chunk: ChunkFields<'_>, out: &mut Vec<u8>) {
        self.chunks += 1;
        self.generated_chars += chunk.generated_chars;
        self.finished |= chunk.finished;
        if let Some(usage) = chunk.usage {
            self.usage = Some(UsageSeen::Text(usage.to_string()));
        }
        if self.envelope.is_none() {
            let envelope = ENVELOPE.iter().filter_map(|k| Some((k.to_string(), chunk.get(k)?.to_value()))).collect();
            self.envelope = Some(envelope);
        }
        if matches!(chunk.get("choices"), Some(Field::Value(Value::Array(choices))) if choices.is_empty()) {
            return;
        }
        if self.include_usage {
            chunk.insert("usage", Field::Value(Value::Null));
        }
        out.extend_from_slice(b"data: ");
        chunk.write(out);
        out.extend_from_slice(b"\n\n");
    }

    /// The stream ended well: the usage chunk when the client asked for it, then `[DONE]`.
    fn complete(&mut self) -> Vec<u8> {
        if self.closed {
            return Vec::new();
        }
        let mut out = Vec::new();
        if let (true, Some(usage)) = (self.include_usage, self.usage.as_ref().and_then(UsageSeen::value)) {
            let mut chunk = self.envelope.clone().unwrap_or_default();
            chunk.insert("model".into(), Value::String(self.model_group.clone()));
            chunk.insert("choices".into(), Value::Array(Vec::new()));
            chunk.insert("usage".into(), usage);
            sse::write_event(&mut out, &chunk);
        }
        out.extend(self.close());
        out
    }

    fn close(&mut self) -> Vec<u8> {
        if self.closed {
            return Vec::new();
        }
        self.closed = true;
        DONE.as_bytes().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn chunk(content: &str, finish: Option<&str>, completion: u64) -> String {
        let finish = finish.map(|f| format!("\"{f}\"")).unwrap_or("null".into());
        format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"served\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}},\"finish_reason\":{finish}}}],\"usage\":{{\"prompt_tokens\":3,\"completion_tokens\":{completion},\"total_tokens\":{}}}}}\n\n",
            3 + completion
        )
    }

    fn events(out: &[u8]) -> Vec<String> {
        let mut parser = SseParser::new();
        let mut events = parser.feed(out);
        events.extend(parser.finish());
        events
    }

    fn run(input: &str, cut: usize) -> (Vec<String>, ChatStreamRelay) {
        run_with(input, cut, false)
    }

    fn run_with(input: &str, cut: usize, include_usage: bool) -> (Vec<String>, ChatStreamRelay) {
        let mut relay = ChatStreamRelay::new("group", vec![], include_usage);
        let mut out = relay.feed(&input.as_bytes()[..cut]);
        out.extend(relay.feed(&input.as_bytes()[cut..]));
        out.extend(relay.finish());
        (events(&out), relay)
    }

    /// The exact bytes relayed, with and without usage: chunks re-written as serde_json writes
    /// them, `model` replaced in place, `usage` removed or null, the usage chunk, `[DONE]`.
    #[test]
    fn streams_keep_their_bytes() {
        let input = concat!(
            "data: {\"id\": \"c\", \"object\": \"chat.completion.chunk\", \"created\": 1, \"model\": \"served\", \"choices\": [{\"index\": 0, \"delta\": {\"role\": \"assistant\", \"content\": \"\"}, \"finish_reason\": null, \"logprobs\": null}], \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 0, \"total_tokens\": 3}}\n\n",
            ": keep-alive\r\n\r\n",
            "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":[{\"type\":\"reasoning\",\"summary\":[{\"type\":\"summary_text\",\"text\":\"Hm \\u00e9\",\"signature\":\"\"}]}]},\"finish_reason\":null}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n",
            "data: {\"id\":\"c\",\"model\":\"served\",\"choices\":[{\"index\":0,\"delta\":{\"role\":null,\"content\":null,\"tool_calls\":[{\"index\":0,\"id\":null,\"type\":null,\"function\":{\"name\":null,\"arguments\":\"{\\\"city\\\":\\\"Par\"}}]},\"finish_reason\":null}],\"usage\":null}\n\n",
            "data: {\"id\":\"c\",\"model\":\"served\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"caf\\u00e9 \\ud83d\\ude80 \\t\"},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5,\"completion_tokens_details\":{\"reasoning_tokens\":1}}}\n\n",
            "data: [DONE]\n\n",
        );
        let expected_chunks = [
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"group","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"logprobs":null}]"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"Hm é","thinking_blocks":[{"type":"thinking","thinking":"Hm é"}]},"finish_reason":null}],"model":"group""#,
            r#"{"id":"c","model":"group","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Par"}}]},"finish_reason":null}]"#,
            r#"{"id":"c","model":"group","choices":[{"index":0,"delta":{"content":"café 🚀 \t"},"finish_reason":"stop"}]"#,
        ];
        for include_usage in [false, true] {
            let mut expected = String::new();
            for chunk in expected_chunks {
                let usage = if include_usage { r#","usage":null"# } else { "" };
                expected.push_str(&format!("data: {chunk}{usage}}}\n\n"));
            }
            if include_usage {
                expected.push_str(r#"data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"group","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"completion_tokens_details":{"reasoning_tokens":1}}}"#);
                expected.push_str("\n\n");
            }
            expected.push_str("data: [DONE]\n\n");
            for cut in [0, 1, 200, 201, input.len() - 3] {
                let mut relay = ChatStreamRelay::new("group", vec![], include_usage);
                let mut out = relay.feed(&input.as_bytes()[..cut]);
                out.extend(relay.feed(&input.as_bytes()[cut..]));
                out.extend(relay.finish());
                assert_eq!(String::from_utf8(out).unwrap(), expected, "usage {include_usage}, cut {cut}");
            }
        }
    }

    /// Chunks of every shape, relayed the fast way (fields kept as text) and the slow way
    /// (the whole chunk as a `Value`): the same bytes out and the same account of the stream.
    #[test]
    fn the_fast_way_relays_what_the_slow_way_relays() {
        struct Rng(u64);
        impl Rng {
            fn below(&mut self, n: usize) -> usize {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                (self.0 % n as u64) as usize
            }
            fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
                items[self.below(items.len())]
            }
        }
        let deltas = [
            r#"{"role":"assistant","content":""}"#,
            r#"{"content":"Hel"}"#,
            r#"{"content":"caf\u00e9 \ud83d\ude80 \"q\" \/"}"#,
            r#"{"role":null,"content":null,"tool_calls":[{"index":0,"id":null,"type":null,"function":{"name":null,"arguments":"{\"ci"}}]}"#,
            r#"{"role":"assistant","tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]}"#,
            r#"{"content":[{"type":"reasoning","summary":[{"type":"summary_text","text":"Hm","signature":"s"}]},{"type":"text","text":"ok"}]}"#,
            r#"{"content":[{"type":"reasoning","summary":[{"type":"summary_encrypted_text","data":"enc"}]}]}"#,
            r#"{}"#,
            r#"null"#,
        ];
        let choice = |rng: &mut Rng| {
            let mut fields = vec![format!(r#""index":{}"#, rng.below(2))];
            if rng.below(5) > 0 {
                fields.push(format!(r#""delta":{}"#, rng.pick(&deltas)));
            }
            fields.push(format!(r#""finish_reason":{}"#, rng.pick(&["null", r#""stop""#, r#""length""#, "3"])));
            if rng.below(2) == 0 {
                fields.push(r#""logprobs":null"#.into());
            }
            if rng.below(6) == 0 {
                fields.push(format!(r#""text":{}"#, rng.pick(&[r#""abc""#, r#""\u00e9""#, "null"])));
            }
            format!("{{{}}}", fields.join(","))
        };
        let values: [(&str, &[&str]); 10] = [
            ("id", &[r#""c""#, r#""chatcmpl_é""#, r#""c\u0041""#, "7", "null"]),
            ("object", &[r#""chat.completion.chunk""#, r#""text_completion""#]),
            (
                "created",
                &[
                    "1767225600",
                    "0",
                    "1.5",
                    "-3",
                    "-0",
                    "12345678901234567890",
                    "99999999999999999999",
                    "1e3",
                    "1767225600.0",
                ],
            ),
            ("model", &[r#""served""#, "null", "5", r#""a\"b""#]),
            ("system_fingerprint", &["null", r#""fp_1""#]),
            (
                "usage",
                &[
                    r#"{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}"#,
                    r#"{"prompt_tokens":3,"completion_tokens":1}"#,
                    r#"{"prompt_tokens":1.5,"completion_tokens_details":{"reasoning_tokens":1}}"#,
                    "null",
                    "5",
                ],
            ),
            ("extra", &[r#"{"a":[1,{"b":"\n"}]}"#, "[true]", r#""x\/y""#, r#""plain""#, "false"]),
            ("error", &[r#"{"message":"boom"}"#, r#""x""#]),
            ("mo\\u0064el", &[r#""escaped name""#]),
            ("\\u00e9", &["1"]),
        ];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (mut fast_taken, mut events_checked) = (0, 0);
        for _ in 0..1_500 {
            let mut input = String::new();
            for _ in 0..1 + rng.below(4) {
                let mut fields: Vec<String> = Vec::new();
                for (name, options) in &values {
                    if rng.below(3) == 0 {
                        continue;
                    }
                    let space = rng.pick(&["", " ", "\n "]);
                    fields.push(format!(r#""{name}":{space}{}"#, rng.pick(options)));
                }
                match rng.below(8) {
                    0 => {}
                    1 => fields.push(r#""choices":[]"#.into()),
                    2 => fields.push(format!(r#""choices":[{},{}]"#, choice(&mut rng), choice(&mut rng))),
                    3 => fields.push(r#""choices":"none""#.into()),
                    _ => fields.push(format!(r#""choices":[{}]"#, choice(&mut rng))),
                }
                // Fields in any order, sometimes one twice.
                for i in (1..fields.len()).rev() {
                    fields.swap(i, rng.below(i + 1));
                }
                if !fields.is_empty() && rng.below(5) == 0 {
                    let again = fields[rng.below(fields.len())].clone();
                    fields.push(again);
                }
                let data = match rng.below(30) {
                    0 => r#"{"oops": "#.to_string(),
                    1 => "[1,2]".to_string(),
                    _ => format!("{{{}}}", fields.join(",")),
                };
                if normalize_chunk_fields(&data, "group").is_some() {
                    fast_taken += 1;
                }
                events_checked += 1;
                // Multi-line data: its lines are joined with a line break.
                for line in data.split('\n') {
                    input.push_str("data: ");
                    input.push_str(line);
                    input.push('\n');
                }
                input.push('\n');
            }
            if rng.below(2) == 0 {
                input.push_str("data: [DONE]\n\n");
            }
            for include_usage in [false, true] {
                let run = |fast: bool| {
                    let mut relay =
                        ChatStreamRelay::new("group", vec![Secret::new("secret-token".into())], include_usage);
                    relay.fast = fast;
                    let mut out = relay.feed(input.as_bytes());
                    out.extend(relay.finish());
                    let account = format!(
                        "{:?} {} {} {:?} {:?} {}",
                        relay.usage(),
                        relay.chunks(),
                        relay.generated_chars(),
                        relay.id(),
                        relay.error(),
                        relay.is_closed()
                    );
                    (String::from_utf8(out).unwrap(), account)
                };
                assert_eq!(run(true), run(false), "{input}");
            }
        }
        // Most chunks took the fast way; the others fell back.
        assert!(fast_taken > events_checked / 2 && fast_taken < events_checked, "{fast_taken} of {events_checked}");
    }

    #[test]
    fn a_complete_stream_is_relayed_once_with_one_done() {
        let input =
            format!("{}{}{}data: [DONE]\n\n", chunk("", None, 0), chunk("Hel", None, 1), chunk("lo", Some("stop"), 2));
        for cut in 0..input.len() {
            let (events, relay) = run(&input, cut);
            assert_eq!(events.len(), 4, "cut {cut}: {events:?}");
            assert_eq!(events[3], "[DONE]");
            let text: String = events[..3]
                .iter()
                .map(|e| {
                    serde_json::from_str::<Value>(e).unwrap()["choices"][0]["delta"]["content"]
                        .as_str()
                        .unwrap()
                        .to_string()
                })
                .collect();
            assert_eq!(text, "Hello");
            assert!(events[..3].iter().all(|e| serde_json::from_str::<Value>(e).unwrap()["model"] == "group"));
            // Not asked for: no usage reaches the client, but the relay knows it.
            assert!(events[..3].iter().all(|e| !e.contains("usage")), "{events:?}");
            assert_eq!(relay.usage().map(|u| u.completion_tokens), Some(2));
            assert!(relay.error().is_none());
        }
    }

    #[test]
    fn done_is_added_when_the_upstream_omits_it() {
        let input = format!("{}{}", chunk("Hi", None, 1), chunk("", Some("stop"), 1));
        let (events, relay) = run(&input, 5);
        assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
        assert_eq!(events.len(), 3);
        assert!(relay.error().is_none());
    }

    #[test]
    fn a_truncated_stream_ends_with_an_error_then_done() {
        let (events, relay) = run(&chunk("Hi", None, 1), 0);
        assert_eq!(events.len(), 3);
        let err: Value = serde_json::from_str(&events[1]).unwrap();
        assert_eq!(err["error"]["type"], "api_error");
        assert_eq!(err["error"]["code"], "502");
        assert_eq!(events[2], "[DONE]");
        assert_eq!(relay.error().map(|e| e.status), Some(502));
        assert_eq!(relay.usage().map(|u| u.completion_tokens), Some(1));
    }

    #[test]
    fn a_malformed_chunk_closes_the_stream() {
        let input = format!("{}data: {{\"oops\": \n\n{}", chunk("Hi", None, 1), chunk("more", Some("stop"), 2));
        let (events, relay) = run(&input, 0);
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[1].contains("malformed"));
        assert!(relay.is_closed());
    }

    #[test]
    fn nothing_after_done_is_relayed() {
        let input = format!("{}data: [DONE]\n\n{}", chunk("Hi", Some("stop"), 1), chunk("late", None, 2));
        let (events, relay) = run(&input, 0);
        assert_eq!(events.len(), 2);
        assert_eq!(relay.usage().map(|u| u.completion_tokens), Some(1));
    }

    #[test]
    fn an_in_stream_error_is_relayed_with_secrets_removed() {
        let mut relay = ChatStreamRelay::new("g", vec![Secret::new("tok-secret-value".into())], true);
        let mut out =
            relay.feed(b"data: {\"error_code\":\"INTERNAL_ERROR\",\"message\":\"boom tok-secret-value\"}\n\n");
        out.extend(relay.finish());
        let events = events(&out);
        assert_eq!(events.len(), 2);
        assert!(events[0].contains("boom [REDACTED]"), "{}", events[0]);
    }

    #[test]
    fn fail_after_close_sends_nothing() {
        let mut relay = ChatStreamRelay::new("g", vec![], true);
        relay.feed(chunk("x", Some("stop"), 1).as_bytes());
        relay.finish();
        assert!(relay.fail(ApiError::gateway_timeout("late")).is_empty());
    }

    #[test]
    fn usage_asked_for_comes_once_in_a_last_chunk_without_choices() {
        let empty = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":0,\"total_tokens\":3}}\n\n";
        let input = format!(
            "{}{empty}{}{}data: [DONE]\n\n",
            chunk("", None, 0),
            chunk("Hel", None, 1),
            chunk("lo", Some("stop"), 2)
        );
        for cut in [0, 7, input.len() / 2] {
            let (events, relay) = run_with(&input, cut, true);
            let chunks: Vec<Value> =
                events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
            assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
            // The upstream's own chunk without choices is not relayed: one usage chunk, at the end.
            assert_eq!(chunks.len(), 4, "{events:?}");
            assert!(chunks[..3].iter().all(|c| c["usage"].is_null() && c["choices"].as_array().unwrap().len() == 1));
            let last = &chunks[3];
            assert_eq!(last["choices"], serde_json::json!([]));
            assert_eq!(
                last["usage"],
                serde_json::json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
            );
            assert_eq!((last["id"].as_str(), last["model"].as_str()), (Some("c"), Some("group")));
            assert_eq!(last["object"], "chat.completion.chunk");
            assert_eq!(relay.usage().map(|u| u.total_tokens), Some(5));
        }
    }

    #[test]
    fn usage_comes_when_the_upstream_omits_done_but_not_after_an_error() {
        let (events, _) = run_with(&chunk("Hi", Some("stop"), 1), 0, true);
        assert_eq!(events.len(), 3, "{events:?}");
        assert!(events[1].contains("\"choices\":[]"));
        let (events, relay) = run_with(&chunk("Hi", None, 1), 0, true);
        assert!(relay.error().is_some());
        assert!(!events.iter().any(|e| e.contains("\"choices\":[]")), "{events:?}");
    }
}
