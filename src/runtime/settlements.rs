//! Settlements that nothing waits for, batched per ledger in each isolate: a key without
//! limits or a budget holds no reservation, so its usage can reach its ledger a few
//! milliseconds late, in one Durable Object call for every request that ended meanwhile,
//! instead of one call per request.
//!
//! Nothing is lost when an isolate goes away. The request that opens a batch carries the
//! batch's flush in its `waitUntil`, and the runtime lets `waitUntil` work finish after the
//! response when it evicts an isolate or replaces it with a new deployment. A flush that fails
//! is retried; settlements are idempotent by call id, so a retried batch counts nothing twice.
//! (An isolate killed outright, over its memory or CPU limit, loses its in-flight work, batched
//! or not.)

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use worker::{console_error, console_log, Delay, Env};

use super::objects::ledger::LedgerStub;
use crate::ledger::messages::SettleRequest;
use crate::ledger::Settled;
use crate::pricing;

/// How long a batch collects settlements before it is sent.
const WINDOW_MS: u64 = 10;
/// Waits before each retry of a failed flush.
const RETRY_MS: [u64; 3] = [100, 500, 2_000];

thread_local! {
    /// Ledger name → settlements waiting for the open batch's flush.
    static PENDING: RefCell<HashMap<String, Vec<SettleRequest>>> = RefCell::new(HashMap::new());
}

/// Adds a settlement to the open batch of `ledger`. The first settlement of a batch gets its
/// flush back: the caller must run it in the background (`waitUntil`) or await it.
pub fn enqueue(env: &Env, ledger: &str, request: SettleRequest) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
    let opens = PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        let batch = pending.entry(ledger.to_string()).or_default();
        batch.push(request);
        batch.len() == 1
    });
    if !opens {
        return None;
    }
    let env = env.clone();
    let ledger = ledger.to_string();
    Some(Box::pin(async move {
        Delay::from(Duration::from_millis(WINDOW_MS)).await;
        let batch = PENDING.with(|pending| pending.borrow_mut().remove(&ledger)).unwrap_or_default();
        flush(&env, &ledger, batch).await;
    }))
}

async fn flush(env: &Env, ledger: &str, batch: Vec<SettleRequest>) {
    let mut failure = String::new();
    for wait_ms in std::iter::once(0).chain(RETRY_MS) {
        if wait_ms > 0 {
            Delay::from(Duration::from_millis(wait_ms)).await;
        }
        let result = match LedgerStub::open(env, ledger) {
            Ok(stub) => stub.settle_batch(&batch).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(results) => {
                for (request, settled) in batch.iter().zip(&results) {
                    report_soft_budget(request, settled);
                }
                return;
            }
            Err(e) => failure = e.message,
        }
    }
    let ids: Vec<&str> = batch.iter().map(|r| r.settlement.id.as_str()).collect();
    console_error!("settling {} calls in {ledger} failed after retries ({failure}): {ids:?}", batch.len());
}

/// Logs the settlement that took a key past its `soft_budget` (once per budget period).
pub fn report_soft_budget(request: &SettleRequest, settled: &Settled) {
    if !settled.soft_budget_crossed {
        return;
    }
    let row = request.row.as_ref();
    let line = serde_json::json!({
        "event": "soft_budget_crossed",
        "key_hash": row.and_then(|r| r.api_key.get(..16)),
        "key_alias": row.and_then(|r| r.key_alias.as_deref()),
        "spend": pricing::format_usd(settled.spend),
        "soft_budget": request.settlement.limits.soft_budget.map(pricing::format_usd),
    });
    console_log!("{line}");
}
