//! `/ui`: the admin page, plain files in the worker's static assets (`build-assets/ui/`, copied
//! from `ui/` by `make build`), never in the wasm. wrangler.toml runs the worker first on every
//! path (so the cl100k table stays private); this route hands `/ui/...` to the assets binding.
//! The page holds no secret: it asks for a key and calls the API like any client.

use worker::{Env, Headers, Method, Request, Response, ResponseBody};

use super::runtime_error;
use crate::openai::ApiError;

const ASSETS_BINDING: &str = "ASSETS";

/// The page loads only its own files and talks only to this gateway; nothing may frame it
/// (a framed sign-in form is a clickjacking target) and no referrer leaves it.
const SECURITY_HEADERS: [(&str, &str); 4] = [
    (
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
];

/// Serves `path` (an `Endpoint::Ui` path, already checked to name a file under `/ui/`).
pub async fn serve(env: &Env, path: &str) -> Result<Response, ApiError> {
    let headers = Headers::new();
    let set = |name: &str, value: &str| headers.set(name, value).map_err(runtime_error);
    if path == "/ui" {
        // Relative links in the page resolve under `/ui/`.
        set("location", "/ui/")?;
        return Ok(Response::empty().map_err(runtime_error)?.with_status(308).with_headers(headers));
    }
    let assets = env.assets(ASSETS_BINDING).map_err(runtime_error)?;
    // The host is ignored: an assets binding serves its files by path.
    let request = Request::new(&format!("https://assets.local{path}"), Method::Get).map_err(runtime_error)?;
    let asset = assets.fetch_request(request).await.map_err(runtime_error)?;
    let status = asset.status_code();
    if status == 404 {
        return Err(ApiError::not_found(format!("No such file in the admin page: {path}")));
    }
    // The assets' own redirects (`/ui/index.html` → `/ui/`) pass through.
    if (300..400).contains(&status) {
        if let Some(location) = asset.headers().get("location").map_err(runtime_error)? {
            set("location", &location)?;
        }
        return Ok(Response::empty().map_err(runtime_error)?.with_status(status).with_headers(headers));
    }
    // A fetched response's headers are immutable, and the gateway adds its own to every
    // answer: its body goes out in a new response.
    let content_type = asset.headers().get("content-type").map_err(runtime_error)?;
    set("content-type", content_type.as_deref().unwrap_or("application/octet-stream"))?;
    for (name, value) in SECURITY_HEADERS {
        set(name, value)?;
    }
    let body = match asset.body() {
        ResponseBody::Stream(stream) => ResponseBody::Stream(stream.clone()),
        _ => ResponseBody::Empty,
    };
    Ok(Response::from_body(body).map_err(runtime_error)?.with_status(status).with_headers(headers))
}
