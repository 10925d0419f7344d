//! databricks-gateway: an OpenAI-compatible gateway to Databricks Model Serving, run as a
//! Cloudflare Worker.
//!
//! The pure modules below hold every rule and build natively, so `cargo test` checks them in
//! milliseconds; `runtime` (wasm only) wires them to the Workers platform.
//!
//! One request's way (`runtime::proxy`, the README's "pipeline"): authenticate (`auth`, `keys`)
//! → parse (`wire`) → resolve (`config`) → admit (`ledger`, `prompt`, `pricing`) → route and
//! forward (`routing::plan`, `databricks`) → relay (`stream`, `sse`) → settle (`ledger`) → log.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod access;
pub mod aliases;
pub mod analytics;
pub mod anthropic;
pub mod attribution;
pub mod auth;
pub mod base64;
pub mod body;
pub mod cache;
pub mod config;
pub mod databricks;
pub mod embedded;
pub mod endpoints;
pub mod family;
pub mod headers;
pub mod ids;
pub mod json;
pub mod keys;
pub mod ledger;
pub mod log;
pub mod metrics;
pub mod model_groups;
pub mod money;
pub mod openai;
pub mod parties;
pub mod price_table;
pub mod pricing;
pub mod prompt;
pub mod refusals;
pub mod reports;
pub mod responses;
pub mod routing;
pub mod secret;
pub mod sse;
pub mod stream;
pub mod time;
pub mod tokens;
pub mod wire;

#[cfg(target_arch = "wasm32")]
mod runtime;
