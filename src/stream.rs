//! The relay of a Databricks chat stream to the client, as a pure state machine: bytes in
//! (cut anywhere), normalised SSE bytes out, and what the stream said about its usage.
//! The runtime feeds it upstream reads and writes what it returns.

use crate::databricks::{normalize_chunk, Chunk, Usage};
use crate::openai::ApiError;
use crate::secret::Secret;
use crate::sse::{self, SseParser};

const DONE: &str = "data: [DONE]\n\n";

#[derive(Debug)]
pub struct ChatStreamRelay {
    parser: SseParser,
    model_group: String,
    /// Secrets scrubbed from error messages that arrive inside the stream.
    secrets: Vec<Secret>,
    usage: Option<Usage>,
    /// The stream's id (`chatcmpl_...`), from its first chunk.
    id: Option<String>,
    /// Characters of content and reasoning relayed, to estimate usage the upstream never sent.
    generated_chars: u64,
    chunks: u64,
    finished: bool,
    /// `[DONE]` was sent: nothing more goes to the client.
    closed: bool,
    error: Option<ApiError>,
}

impl ChatStreamRelay {
    pub fn new(model_group: &str, secrets: Vec<Secret>) -> Self {
        ChatStreamRelay {
            parser: SseParser::new(),
            model_group: model_group.to_string(),
            secrets,
            usage: None,
            id: None,
            generated_chars: 0,
            chunks: 0,
            finished: false,
            closed: false,
            error: None,
        }
    }

    /// Feeds upstream bytes; returns what to send to the client now.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let events = self.parser.feed(bytes);
        self.relay(events)
    }

    /// The upstream ended. Ends the client's stream with `[DONE]`, after an error event
    /// when the answer was cut before any choice finished.
    pub fn finish(&mut self) -> Vec<u8> {
        let events = self.parser.finish();
        let mut out = self.relay(events);
        if !self.closed && !self.finished {
            out.extend(self.fail(ApiError::bad_gateway("Databricks ended the stream before the answer was complete")));
        }
        out.extend(self.close());
        out
    }

    /// The upstream failed (read error, idle timeout): an error event, then `[DONE]`.
    pub fn fail(&mut self, error: ApiError) -> Vec<u8> {
        if self.closed {
            return Vec::new();
        }
        let mut out = error.to_sse_event().into_bytes();
        self.error = Some(error);
        out.extend(self.close());
        out
    }

    /// True once the client's stream is complete: stop reading the upstream.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The last usage the upstream reported (Databricks' usage is cumulative).
    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn chunks(&self) -> u64 {
        self.chunks
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn generated_chars(&self) -> u64 {
        self.generated_chars
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
                out.extend(self.close());
                break;
            }
            let secrets: Vec<&str> = self.secrets.iter().map(Secret::expose).collect();
            match normalize_chunk(&data, &self.model_group, &secrets) {
                Chunk::Data { json, usage, finished, id, generated_chars } => {
                    self.chunks += 1;
                    self.generated_chars += generated_chars;
                    if self.id.is_none() {
                        self.id = id;
                    }
                    self.finished |= finished;
                    if usage.is_some() {
                        self.usage = usage;
                    }
                    out.extend(sse::event(&json).into_bytes());
                }
                Chunk::Error(error) => out.extend(self.fail(error)),
                Chunk::Malformed => {
                    out.extend(self.fail(ApiError::bad_gateway("Databricks sent a malformed stream chunk")))
                }
            }
        }
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
        let mut relay = ChatStreamRelay::new("group", vec![]);
        let mut out = relay.feed(&input.as_bytes()[..cut]);
        out.extend(relay.feed(&input.as_bytes()[cut..]));
        out.extend(relay.finish());
        (events(&out), relay)
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
        let mut relay = ChatStreamRelay::new("g", vec![Secret::new("tok-secret-value".into())]);
        let mut out =
            relay.feed(b"data: {\"error_code\":\"INTERNAL_ERROR\",\"message\":\"boom tok-secret-value\"}\n\n");
        out.extend(relay.finish());
        let events = events(&out);
        assert_eq!(events.len(), 2);
        assert!(events[0].contains("boom [REDACTED]"), "{}", events[0]);
    }

    #[test]
    fn fail_after_close_sends_nothing() {
        let mut relay = ChatStreamRelay::new("g", vec![]);
        relay.feed(chunk("x", Some("stop"), 1).as_bytes());
        relay.finish();
        assert!(relay.fail(ApiError::gateway_timeout("late")).is_empty());
    }
}
