//! Calls to Databricks through the Workers `Fetch` API, with a time limit that aborts the
//! upstream request (so an abandoned call stops costing money).

use std::future::Future;
use std::time::Duration;

use futures_util::future::{select, Either};
use worker::js_sys::Uint8Array;
use worker::wasm_bindgen::JsValue;
use worker::{web_sys, AbortController, Delay, Fetch, Headers, Request, Response};

use crate::databricks::timed_out;
use crate::openai::ApiError;
use crate::secret::Secret;

pub const USER_AGENT: &str = concat!("databricks-gateway/", env!("CARGO_PKG_VERSION"));

/// An upstream answer whose headers arrived; `controller` aborts it (dropping it does not).
pub struct Upstream {
    pub response: Response,
    pub controller: AbortController,
}

/// POSTs a JSON body with the bearer token; waits at most `timeout_ms` for the answer's headers.
pub async fn post_json(
    url: &str,
    token: &Secret,
    body: &[u8],
    extra_headers: &[(&str, String)],
    timeout_ms: u64,
) -> Result<Upstream, ApiError> {
    let request = build_request(url, token, body, extra_headers)
        .map_err(|e| ApiError::bad_gateway(format!("Cannot build the Databricks request to {url}: {e}")))?;
    let controller = AbortController::default();
    let signal = controller.signal();
    match within(timeout_ms, Fetch::Request(request).send_with_signal(&signal)).await {
        Some(Ok(response)) => Ok(Upstream { response, controller }),
        Some(Err(e)) => Err(ApiError::bad_gateway(format!("Could not reach Databricks at {url}: {e}"))),
        None => {
            controller.abort();
            Err(timed_out(timeout_ms))
        }
    }
}

fn build_request(url: &str, token: &Secret, body: &[u8], extra_headers: &[(&str, String)]) -> worker::Result<Request> {
    let headers = Headers::new();
    for (name, value) in extra_headers {
        headers.set(name, value)?;
    }
    headers.set("content-type", "application/json")?;
    headers.set("authorization", &format!("Bearer {}", token.expose()))?;
    headers.set("user-agent", USER_AGENT)?;
    post_request(url, Some(&headers), &Uint8Array::from(body).into())
}

/// A POST request, as `Request::new_with_init` builds it, on web_sys's `RequestInit` rather
/// than worker's: converting worker's carries the code for its `cf` options (image resizing and
/// more, about 12 KB of wasm), which the gateway never sets.
pub fn post_request(url: &str, headers: Option<&Headers>, body: &JsValue) -> worker::Result<Request> {
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    if let Some(headers) = headers {
        init.set_headers(headers.as_ref());
    }
    init.set_body(body);
    web_sys::Request::new_with_str_and_init(url, &init).map(Request::from).map_err(|e| {
        worker::Error::JsError(e.as_string().unwrap_or_else(|| "invalid URL or options for Request".to_string()))
    })
}

/// The body of an answer, read within `ms`; an unreadable one is empty, and one that takes too
/// long aborts the request.
pub async fn body_within(ms: u64, response: &mut Response, controller: AbortController) -> Vec<u8> {
    match within(ms, response.bytes()).await {
        Some(result) => result.unwrap_or_default(),
        None => {
            controller.abort();
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
