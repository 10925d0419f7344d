//! Headers crossing from wasm to JavaScript in one call: names and values, each on a line of its
//! own, split and set on the JavaScript side. From wasm, each `Headers::set` is a boundary
//! crossing and two strings decoded, and a request or an answer has a dozen headers. Both the
//! answers (`runtime::fetch`) and the upstream POST (`runtime::upstream`) are built this way.

use worker::wasm_bindgen::{self, prelude::wasm_bindgen, JsValue};
use worker::{js_sys, web_sys};

/// Header names and values, each on a line of its own, in the order they are to be set (a later
/// one replaces an earlier one of the same name).
#[derive(Default)]
pub struct HeaderLines(String);

impl HeaderLines {
    /// Adds a header; a value holding a line break is refused, as `Headers::set` would refuse it.
    pub fn push(&mut self, name: &str, value: &str) -> Result<(), String> {
        if value.contains(['\n', '\r']) {
            return Err(format!("the value of {name} holds a line break"));
        }
        if !self.0.is_empty() {
            self.0.push('\n');
        }
        self.0.push_str(name);
        self.0.push('\n');
        self.0.push_str(value);
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[wasm_bindgen(inline_js = "export function set_headers(headers, lines) {
    const parts = lines.split('\\n');
    for (let i = 1; i < parts.length; i += 2) headers.set(parts[i - 1], parts[i]);
}
export function respond(status, body, lines) {
    const headers = new Headers();
    set_headers(headers, lines);
    return new Response(body.slice(), { status, headers });
}
export function post(url, authorization, lines, body, signal) {
    const headers = new Headers();
    set_headers(headers, lines);
    headers.set('authorization', authorization);
    return fetch(url, { method: 'POST', headers, body: body.slice(), signal });
}")]
extern "C" {
    /// Sets the headers `lines` holds, in one call.
    #[wasm_bindgen(catch)]
    pub fn set_headers(headers: &web_sys::Headers, lines: &str) -> Result<(), JsValue>;
    /// The runtime's `Response` with `status`, a copy of `body` and the headers `lines` holds,
    /// in one call.
    #[wasm_bindgen(catch)]
    pub fn respond(status: u16, body: &[u8], lines: &str) -> Result<web_sys::Response, JsValue>;
    /// The global `fetch` of a POST with a copy of `body`, the headers `lines` holds and then
    /// `authorization`, built in one call: from wasm, the `Headers`, each header, the
    /// `RequestInit` and its four fields, the body's `Uint8Array` and the `Request` are a call
    /// each.
    #[wasm_bindgen(catch)]
    pub fn post(
        url: &str,
        authorization: &str,
        lines: &str,
        body: &[u8],
        signal: &web_sys::AbortSignal,
    ) -> Result<js_sys::Promise, JsValue>;
}
