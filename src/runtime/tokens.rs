//! Loads the cl100k decode table from the worker's static assets (the `ASSETS` binding, filled
//! by the deploy from `build-assets/`) on the first request that sends token ids, once per
//! isolate, and decodes such an `input` in place.

use std::cell::RefCell;
use std::rc::Rc;

use serde_json::{Map, Value};
use worker::Env;

use super::runtime_error;
use crate::openai::ApiError;
use crate::tokens::{TokenInput, TokenTable, TABLE_FILE};

const ASSETS_BINDING: &str = "ASSETS";

thread_local! {
    static TABLE: RefCell<Option<Rc<TokenTable>>> = const { RefCell::new(None) };
}

/// Replaces an embeddings `input` of token ids with its text. Returns the text's length in
/// bytes (0 when `input` was text already), which bounds the prompt like the body's size does.
pub async fn decode_token_input(env: &Env, body: &mut Map<String, Value>) -> Result<u64, ApiError> {
    let Some(input) = TokenInput::from_body(body)? else { return Ok(0) };
    let table = table(env).await?;
    let text = input.decode(&table)?;
    let bytes = match &text {
        Value::String(s) => s.len(),
        Value::Array(texts) => texts.iter().filter_map(Value::as_str).map(str::len).sum(),
        _ => 0,
    };
    body.insert("input".into(), text);
    Ok(bytes as u64)
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
    // The host is ignored: an assets binding serves its files by path.
    let mut response = assets.fetch(format!("https://assets.local/{TABLE_FILE}"), None).await.map_err(runtime_error)?;
    if response.status_code() != 200 {
        return Err(missing(format!("{TABLE_FILE} answered {}", response.status_code())));
    }
    let raw = response.bytes().await.map_err(runtime_error)?;
    let table = Rc::new(TokenTable::parse(raw).map_err(missing)?);
    TABLE.with(|t| *t.borrow_mut() = Some(table.clone()));
    Ok(table)
}
