//! Calls to Databricks through the Workers `Fetch` API, with a time limit that aborts the
//! upstream request (so an abandoned call stops costing money).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures_util::future::{select, Either};
use worker::js_sys::{self, Uint8Array};
use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::{web_sys, AbortController, ByteStream, Delay, Headers};

use super::header_lines::{post, HeaderLines};
use crate::databricks::timed_out;
use crate::openai::ApiError;
use crate::secret::Secret;

pub const USER_AGENT: &str = concat!("databricks-gateway/", env!("CARGO_PKG_VERSION"));

/// An upstream answer whose headers arrived; `controller` aborts it (dropping it does not).
///
/// The runtime's own `Response`, not worker's: converting one into worker's reads its `cf`
/// and `webSocket` properties, and worker's `bytes()` reads the body through a stream reader,
/// a few JavaScript calls per chunk, where `arrayBuffer()` is one.
pub struct Upstream {
    pub response: web_sys::Response,
    pub controller: AbortController,
}

impl Upstream {
    pub fn status(&self) -> u16 {
        self.response.status()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.response.headers().get(name).ok().flatten()
    }
}

/// One timer for every step of an exchange (the answer's headers, then its body): each step
/// waits only for what is left of it, and the exchange sets one timeout, not one per step.
pub struct Deadline {
    ms: u64,
    timer: Pin<Box<Delay>>,
}

impl Deadline {
    pub fn new(ms: u64) -> Self {
        Deadline { ms, timer: Box::pin(Delay::from(Duration::from_millis(ms))) }
    }

    /// The whole time allowed.
    pub fn ms(&self) -> u64 {
        self.ms
    }

    /// `fut`'s output, or `None` when the deadline passes first.
    pub async fn within<F: Future>(&mut self, fut: F) -> Option<F::Output> {
        let fut = std::pin::pin!(fut);
        match select(fut, self.timer.as_mut()).await {
            Either::Left((output, _)) => Some(output),
            Either::Right(_) => None,
        }
    }
}

/// POSTs a JSON body with the bearer token; waits for the answer's headers until `deadline`.
pub async fn post_json(
    url: &str,
    token: &Secret,
    body: &[u8],
    extra_headers: &[(&str, String)],
    deadline: &mut Deadline,
) -> Result<Upstream, ApiError> {
    let controller = AbortController::default();
    // The extra headers first: ours replace any of the same name.
    let mut lines = HeaderLines::default();
    let ours = [("content-type", "application/json"), ("user-agent", USER_AGENT)];
    for (name, value) in extra_headers.iter().map(|(name, value)| (*name, value.as_str())).chain(ours) {
        lines
            .push(name, value)
            .map_err(|e| ApiError::bad_gateway(format!("Cannot build the Databricks request to {url}: {e}")))?;
    }
    let sent = post(url, &format!("Bearer {}", token.expose()), lines.as_str(), body, &controller.signal())
        .map(JsFuture::from)
        .map_err(|e| {
            ApiError::bad_gateway(format!("Cannot build the Databricks request to {url}: {}", worker::Error::from(e)))
        })?;
    match deadline.within(sent).await {
        Some(Ok(response)) => Ok(Upstream { response: response.unchecked_into(), controller }),
        Some(Err(e)) => {
            Err(ApiError::bad_gateway(format!("Could not reach Databricks at {url}: {}", worker::Error::from(e))))
        }
        None => {
            controller.abort();
            Err(timed_out(deadline.ms()))
        }
    }
}

/// A POST request, built on web_sys's `RequestInit` and left a web_sys `Request`: worker's
/// `RequestInit` carries the code for its `cf` options (about 12 KB of wasm), and worker's
/// `Request` reads the new request's method, URL, headers and `cf` back into wasm.
pub fn post_request(
    url: &str,
    headers: Option<&Headers>,
    body: &JsValue,
    controller: Option<&AbortController>,
) -> worker::Result<web_sys::Request> {
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    if let Some(headers) = headers {
        init.set_headers(headers.as_ref());
    }
    init.set_body(body);
    if let Some(controller) = controller {
        init.set_signal(Some(&controller.signal()));
    }
    web_sys::Request::new_with_str_and_init(url, &init).map_err(|e| {
        worker::Error::JsError(e.as_string().unwrap_or_else(|| "invalid URL or options for Request".to_string()))
    })
}

/// The global `fetch`.
pub async fn fetch(request: &web_sys::Request) -> worker::Result<web_sys::Response> {
    let scope: web_sys::WorkerGlobalScope = js_sys::global().unchecked_into();
    let answer = JsFuture::from(scope.fetch_with_request(request)).await?;
    Ok(answer.dyn_into()?)
}

/// A whole answer body, in one `arrayBuffer()` call and one copy into wasm.
pub async fn bytes(response: &web_sys::Response) -> worker::Result<Vec<u8>> {
    buffer_bytes(response.array_buffer()?).await
}

/// The bytes an `arrayBuffer()` call promised, copied into wasm.
pub async fn buffer_bytes(buffer: js_sys::Promise) -> worker::Result<Vec<u8>> {
    let buffer = JsFuture::from(buffer).await?;
    Ok(Uint8Array::new(&buffer).to_vec())
}

/// The answer body as a stream of chunks (`None` for an answer without a body).
pub fn byte_stream(response: &web_sys::Response) -> Option<ByteStream> {
    byte_stream_of(response.body())
}

/// A request's or an answer's body as a stream of chunks.
pub fn byte_stream_of(body: Option<web_sys::ReadableStream>) -> Option<ByteStream> {
    body.map(ByteStream::from)
}

/// The body of an answer, read before `deadline`; an unreadable one is empty, and one that
/// takes too long aborts the request.
pub async fn body_within(deadline: &mut Deadline, upstream: Upstream) -> Vec<u8> {
    match deadline.within(bytes(&upstream.response)).await {
        Some(result) => result.unwrap_or_default(),
        None => {
            upstream.controller.abort();
            Vec::new()
        }
    }
}

/// `fut`'s output, or `None` when `ms` milliseconds pass first.
pub async fn within<F: Future>(ms: u64, fut: F) -> Option<F::Output> {
    let fut = std::pin::pin!(fut);
    let delay = std::pin::pin!(Delay::from(Duration::from_millis(ms)));
    match select(fut, delay).await {
        Either::Left((output, _)) => Some(output),
        Either::Right(_) => None,
    }
}
