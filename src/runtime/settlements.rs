//! Settlements of keys without limits or a budget, sent in batches per ledger in each
//! isolate. Such a key holds no reservation, so nothing waits on its settlement: the answer
//! leaves at once, and the settlement joins the isolate's queue for the key's ledger. The
//! request that finds no sender at work starts one, in its own `waitUntil`: it sends what is
//! queued at once, and while that call is out, later settlements queue up and go together in
//! the next call. Under load one call carries many settlements; an idle isolate adds no delay.
//!
//! Why nothing is lost when an isolate goes away: the sender runs as `waitUntil` work, which
//! the runtime lets finish after the response when it evicts an isolate or replaces it with a
//! new deployment, and a client that hangs up does not cancel it. A failed call is retried;
//! settlements are idempotent by call id, so a batch retried after a lost answer counts
//! nothing twice. (A runtime killed outright loses its in-flight work, batched or not, as it
//! did with one background call per request.) Requests never wait on one another: workerd
//! cancels a request that waits on a promise only another request's I/O can resolve.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use worker::{console_error, console_log, Delay, Env};

use super::now_ms;
use super::objects::ledger::LedgerStub;
use crate::ledger::messages::SettleRequest;
use crate::ledger::Settled;

/// Waits before each retry of a failed call.
const RETRY_MS: [u64; 3] = [50, 250, 1_000];
/// The most settlements one call carries.
const MAX_BATCH: usize = 128;
/// A sender hands over to a new one after this long, well within `waitUntil`'s 30 s.
const SENDER_MAX_MS: u64 = 10_000;

#[derive(Default)]
struct Queue {
    pending: Vec<SettleRequest>,
    /// A sender is at work for this ledger.
    sending: bool,
}

thread_local! {
    static QUEUES: RefCell<HashMap<String, Queue>> = RefCell::new(HashMap::new());
}

/// Queues a settlement for `ledger`. Returns the sender's work when this request must start
/// it: the caller runs it in `waitUntil` (or awaits it, when already running in one).
pub fn enqueue(env: &Env, ledger: &str, request: SettleRequest) -> Option<impl Future<Output = ()> + 'static> {
    let starts = QUEUES.with(|queues| {
        let mut queues = queues.borrow_mut();
        let queue = queues.entry(ledger.to_string()).or_default();
        queue.pending.push(request);
        !std::mem::replace(&mut queue.sending, true)
    });
    starts.then(|| send_queued(env.clone(), ledger.to_string()))
}

/// Sends the ledger's queue, again and again while settlements keep arriving.
async fn send_queued(env: Env, ledger: String) {
    // Clears `sending` however this ends, so that a later request starts a new sender.
    let _sending = Sending(&ledger);
    let started = now_ms();
    while now_ms().saturating_sub(started) < SENDER_MAX_MS {
        let batch = QUEUES.with(|queues| {
            let mut queues = queues.borrow_mut();
            let Some(queue) = queues.get_mut(&ledger) else { return Vec::new() };
            let take = queue.pending.len().min(MAX_BATCH);
            queue.pending.drain(..take).collect::<Vec<_>>()
        });
        if batch.is_empty() {
            return;
        }
        if let Some(results) = send(&env, &ledger, &batch).await {
            for (request, settled) in batch.iter().zip(&results) {
                report_soft_budget(request, settled);
            }
        }
    }
}

struct Sending<'a>(&'a str);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        QUEUES.with(|queues| {
            let mut queues = queues.borrow_mut();
            if let Some(queue) = queues.get_mut(self.0) {
                queue.sending = false;
                if queue.pending.is_empty() {
                    queues.remove(self.0);
                }
            }
        });
    }
}

/// One call for the whole batch, retried; `None` when every try failed (logged).
async fn send(env: &Env, ledger: &str, batch: &[SettleRequest]) -> Option<Vec<Settled>> {
    let mut failure = String::new();
    for wait_ms in std::iter::once(0).chain(RETRY_MS) {
        if wait_ms > 0 {
            Delay::from(Duration::from_millis(wait_ms)).await;
        }
        let result = match LedgerStub::open(env, ledger) {
            Ok(stub) => stub.settle_batch(batch).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(results) => return Some(results),
            Err(e) => failure = e.message,
        }
    }
    let ids: Vec<&str> = batch.iter().map(|r| r.settlement.id.as_str()).collect();
    console_error!("settling {} calls in {ledger} failed after retries ({failure}): {ids:?}", batch.len());
    None
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
        "spend": settled.spend.to_string(),
        "soft_budget": request.settlement.limits.soft_budget.map(|m| m.to_string()),
    });
    console_log!("{line}");
}
