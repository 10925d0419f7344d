//! Server-sent events framing. Upstream reads do not align with events, so the parser keeps
//! partial lines across calls to [`SseParser::feed`].

/// Collects the `data` of each event from a byte stream cut at arbitrary points.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// The `data` lines of the event being read, joined with `\n`.
    data: Option<String>,
    /// The previous chunk ended in `\r`: a `\n` starting the next one belongs to that line end.
    after_cr: bool,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes; returns the data of every event they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_cr {
            self.after_cr = false;
            if let Some(stripped) = rest.strip_prefix(b"\n") {
                rest = stripped;
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, is_cr) = (&rest[..end], rest[end] == b'\r');
            rest = &rest[end + 1..];
            if is_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if self.line.is_empty() {
                // The whole line is in this chunk: read in place.
                self.take_line(line, &mut events);
            } else {
                let mut buffered = std::mem::take(&mut self.line);
                buffered.extend_from_slice(line);
                self.take_line(&buffered, &mut events);
                buffered.clear();
                self.line = buffered;
            }
        }
        self.line.extend_from_slice(rest);
        events
    }

    /// Ends the stream: an event left without its closing blank line is still delivered,
    /// since some upstreams end on `data: [DONE]\n` alone.
    pub fn finish(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.take_line(&line, &mut events);
        }
        if let Some(data) = self.data.take() {
            events.push(data);
        }
        events
    }

    fn take_line(&mut self, line: &[u8], events: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                events.push(data);
            }
            return;
        }
        if line[0] == b':' {
            return; // a comment, used as a keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        if field == b"data" {
            // Valid UTF-8 is checked by the quick path, invalid bytes replaced by the slow one.
            let value = match std::str::from_utf8(value) {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(value),
            };
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            }
        }
        // `event`, `id` and `retry` carry nothing the gateway relays.
    }
}

/// Appends one event, framed for the client, whose data is `object` as compact JSON.
pub fn write_event(out: &mut Vec<u8>, object: &serde_json::Map<String, serde_json::Value>) {
    out.extend_from_slice(b"data: ");
    crate::json::write_map(out, object);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"a\":1}\n\n: keep-alive\n\nevent: message\ndata: {\"b\":\"é\"}\n\ndata: line1\ndata: line2\n\ndata: [DONE]\n\n";
    const EXPECTED: [&str; 4] = ["{\"a\":1}", "{\"b\":\"é\"}", "line1\nline2", "[DONE]"];

    fn parse_in_pieces(bytes: &[u8], cuts: &[usize]) -> Vec<String> {
        let mut parser = SseParser::new();
        let mut events = Vec::new();
        let mut start = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            events.extend(parser.feed(&bytes[start..cut]));
            start = cut;
        }
        events.extend(parser.finish());
        events
    }

    #[test]
    fn events_survive_every_split_point() {
        for line_end in ["\n", "\r\n", "\r"] {
            let text = STREAM.replace('\n', line_end);
            let bytes = text.as_bytes();
            for cut in 0..=bytes.len() {
                assert_eq!(parse_in_pieces(bytes, &[cut]), EXPECTED, "line end {line_end:?}, cut at {cut}");
            }
        }
    }

    #[test]
    fn byte_by_byte_feeding_splits_utf8_safely() {
        let bytes = STREAM.as_bytes();
        let cuts: Vec<usize> = (1..bytes.len()).collect();
        assert_eq!(parse_in_pieces(bytes, &cuts), EXPECTED);
    }

    #[test]
    fn a_final_event_without_blank_line_is_kept() {
        assert_eq!(parse_in_pieces(b"data: x\n\ndata: [DONE]\n", &[]), ["x", "[DONE]"]);
        assert_eq!(parse_in_pieces(b"data: [DONE]", &[]), ["[DONE]"]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_dropped() {
        assert_eq!(parse_in_pieces(b"data: a\xffb\xc3\n\n", &[]), ["a\u{fffd}b\u{fffd}"]);
        assert_eq!(parse_in_pieces(b"data: caf\xc3\xa9\n\n", &[9]), ["caf\u{e9}"]);
    }

    #[test]
    fn data_without_space_and_empty_lines_between_events() {
        assert_eq!(parse_in_pieces(b"data:x\n\n\n\ndata:y\n\n", &[]), ["x", "y"]);
    }
}
