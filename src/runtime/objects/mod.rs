//! Calling a Durable Object: JSON in, JSON out, over the object's `fetch`. Each
//! object class lives in a file of its own.

pub mod group_health;
pub mod key_alias;
pub mod ledger;
pub mod reports;

use worker::wasm_bindgen::{JsCast, JsValue};
use worker::wasm_bindgen_futures::JsFuture;
use worker::worker_sys::DurableObject as RawStub;
use worker::{console_error, web_sys, Env};

use super::upstream::{self, post_request};
use crate::fields::FromJson;
use crate::json::{self, ToJson};
use crate::openai::ApiError;

/// A handle on one named object of a binding.
pub struct ObjectStub {
    /// The runtime's stub itself: worker's `Stub::fetch_with_request` takes and gives worker's
    /// `Request` and `Response`, whose conversions read properties the call never needs (the
    /// request's URL, method, headers and `cf`; the answer's `cf` and `webSocket`), and reads
    /// the answer through a stream reader.
    stub: RawStub,
    /// The binding's name, for the errors.
    binding: &'static str,
}

impl ObjectStub {
    pub fn open(env: &Env, binding: &'static str, name: &str) -> Result<Self, ApiError> {
        let namespace = env.durable_object(binding).map_err(|_| {
            ApiError::internal(format!(
                "The gateway is misconfigured: the Durable Object binding `{binding}` is missing."
            ))
        })?;
        let stub = namespace.id_from_name(name).and_then(|id| id.get_stub()).map_err(|e| failed(binding, e))?;
        Ok(ObjectStub { stub: stub.into_rpc(), binding })
    }

    /// POSTs `body` as JSON to `path`; the answer is JSON. The detail of a failure goes to the
    /// log; the caller learns only which object failed.
    /// Requests are written and answers read by hand (`ToJson`, `FromJson`: a smaller wasm).
    pub async fn call<T: FromJson>(&self, path: &str, body: &(impl ToJson + ?Sized)) -> Result<T, ApiError> {
        let bytes = self.post(path, json::to_string(body)).await?;
        let answer = serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| e.to_string());
        answer.and_then(|v| T::from_json(&v)).map_err(|e| {
            console_error!("the {} object answered {path} badly: {e}", self.binding);
            ApiError::internal(format!("The {} Durable Object answered badly.", self.binding))
        })
    }

    /// The exchange itself, not generic: one copy of it in the module whatever the types.
    async fn post(&self, path: &str, json: String) -> Result<Vec<u8>, ApiError> {
        let binding = self.binding;
        let request = post_request(&format!("https://object{path}"), None, &JsValue::from_str(&json), None)
            .map_err(|e| failed(binding, e))?;
        let response = self.exchange(&request).await.map_err(|e| failed(binding, e))?;
        let bytes = upstream::bytes(&response).await.map_err(|e| failed(binding, e))?;
        if response.status() != 200 {
            console_error!("the {binding} object refused {path}: {}", String::from_utf8_lossy(&bytes));
            return Err(ApiError::internal(format!("The {binding} Durable Object refused a call.")));
        }
        Ok(bytes)
    }

    async fn exchange(&self, request: &web_sys::Request) -> worker::Result<web_sys::Response> {
        let answer = JsFuture::from(self.stub.fetch_with_request(request)?).await?;
        Ok(answer.unchecked_into())
    }
}

fn failed(binding: &str, e: worker::Error) -> ApiError {
    console_error!("the {binding} Durable Object failed: {e}");
    ApiError::internal(format!("The {binding} Durable Object failed."))
}
