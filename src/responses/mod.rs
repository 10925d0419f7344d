//! OpenAI's Responses API (`POST /v1/responses`), the one Codex CLI speaks, served two ways:
//!
//! - **native**, for OpenAI deployments (GPT-5, Codex models): the body goes to Databricks'
//!   `{api_base}/responses` with the endpoint as `model` ([`ResponsesRequest::native_body`]); the
//!   answer and the stream are Responses already, relayed with usage read from them
//!   ([`native_answer`], [`NativeRelay`]).
//! - **translated**, for every other deployment: the request becomes a chat completions body
//!   ([`ResponsesRequest::to_chat`], then `databricks::prepare_body` as for any chat request),
//!   and the chat answer or chat stream becomes a Response or the Responses event sequence
//!   ([`response_from_chat`], [`TranslatedRelay`]).
//!
//! Databricks is stateless and the gateway stores no responses: `previous_response_id`,
//! `conversation` and `item_reference` items are refused, and every Response says `store: false`.
//! The client sends the whole conversation each turn, as Codex does.
//!
//! Claude's thinking signatures survive the round trip through a client: a translated reasoning
//! item carries its signature in `encrypted_content` (prefixed, see [`chat`]), which comes back
//! in the next request's `input` and becomes the reasoning part Databricks expects.

mod answer;
mod chat;
mod events;
mod native;
mod request;
mod translated;
mod usage;
mod wire;

pub use answer::{native_answer, response_from_chat, ResponseAnswer, ResponseShell};
pub use chat::ChatTranslation;
pub use native::NativeRelay;
pub use request::{new_response_id, parse_request, serves_natively, ResponsesRequest};
pub use translated::TranslatedRelay;
pub use usage::Usage;
pub use wire::Responses;

/// The route, under the serving-endpoints base, that Databricks answers native requests on.
pub const NATIVE_ROUTE: &str = "responses";
