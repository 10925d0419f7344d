//! Loads the cl100k decode table from the worker's static assets (the `ASSETS` binding, filled
//! by the deploy from `build-assets/`) on the first request that sends token ids, once per
//! isolate, and decodes such an `input` in place.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value};
use worker::{Env, Method, Request};

use super::runtime_error;
use crate::openai::ApiError;
use crate::tokens::{TokenInput, TokenTable, TABLE_FILE};

const ASSETS_BINDING: &str = "ASSETS";

thread_local! {
    static TABLE: RefCell<Option<Rc<TokenTable>>> = const { RefCell::new(None) };
}

/// Replaces an embeddings `input` of token ids with its text (which admission then counts as
/// any text); an `input` of text is left as it is.
pub async fn decode_token_input(env: &Env, body: &mut Map<String, Value>) -> Result<(), ApiError> {
    let Some(input) = TokenInput::from_body(body)? else { return Ok(()) };
    let table = table(env).await?;
    body.insert("input".into(), input.decode(&table)?);
    Ok(())
}

async fn table(env: &Env) -> Result<Rc<TokenTable>, ApiError> {
    if let Some(table) = TABLE.with(|t| t.borrow().clone()) {
        return Ok(table);
    }
    let missing = |why: String| {
        worker::console_error!("token table: {why}");
        ApiError::internal(format!(
            "`input` as token ids needs the {TABLE_FILE} asset, which this deployment lacks; see the README"
        ))
    };
    let assets = env.assets(ASSETS_BINDING).map_err(|e| missing(format!("no {ASSETS_BINDING} binding: {e}")))?;
    // The host is ignored: an assets binding serves its files by path. A `Request` rather than
    // `fetch(url, None)`, whose optional worker `RequestInit` carries the code for its `cf`
    // options (about 12 KB of wasm).
    let request = Request::new(&format!("https://assets.local/{TABLE_FILE}"), Method::Get).map_err(runtime_error)?;
    let mut response = assets.fetch_request(request).await.map_err(runtime_error)?;
    if response.status_code() != 200 {
        return Err(missing(format!("{TABLE_FILE} answered {}", response.status_code())));
    }
    let raw = response.bytes().await.map_err(runtime_error)?;
    let table = Rc::new(TokenTable::parse(raw).map_err(missing)?);
    TABLE.with(|t| *t.borrow_mut() = Some(table.clone()));
    Ok(table)
}
