//! Batches of Durable Object calls nothing waits for, per isolate: the settlements of keys
//! without limits or a budget (per key ledger), and the spend reports' events (`reports`). A
//! [`Sink`] is one kind of such call; the batching below serves both.
//!
//! A key without limits or a budget holds no reservation, so nothing waits on its settlement:
//! the answer leaves at once, and the settlement joins the isolate's queue for the key's
//! ledger. The request that finds no sender at work starts one, in its own `waitUntil`: it
//! lets items gather for its sink's `GATHER_MS`, sends what is queued, and while that call is
//! out, later items queue up and go together in the next call. Under load one call carries
//! many settlements.
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
use std::thread::LocalKey;
use std::time::Duration;

use worker::{console_error, console_log, Delay, Env};

use super::now_ms;
use super::objects::ledger::LedgerStub;
use crate::ledger::messages::SettleRequest;
use crate::ledger::Settled;

/// Waits before each retry of a failed call.
const RETRY_MS: [u64; 3] = [50, 250, 1_000];
/// A sender hands over to a new one after this long, well within `waitUntil`'s 30 s.
const SENDER_MAX_MS: u64 = 10_000;

/// One kind of Durable Object call that takes a batch, and the isolate's queues for it.
pub trait Sink: 'static {
    type Item: 'static;
    /// The most items one call carries.
    const MAX_BATCH: usize;
    /// How long a sender lets items gather before each call, so that under load one call
    /// carries many items instead of about one per request.
    const GATHER_MS: u64 = 0;
    /// The isolate's queues of this sink, by the name of the object they go to.
    fn queues() -> &'static LocalKey<RefCell<Queues<Self::Item>>>;
    /// Sends one batch (idempotent: a batch retried after a lost answer counts nothing twice).
    fn send(env: &Env, object: &str, batch: &[Self::Item]) -> impl Future<Output = Result<(), String>>;
    /// What a failed batch's log line names each item by.
    fn id(item: &Self::Item) -> &str;
}

pub type Queues<T> = HashMap<String, Queue<T>>;

pub struct Queue<T> {
    pending: Vec<T>,
    /// A sender is at work for this object.
    sending: bool,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Queue { pending: Vec::new(), sending: false }
    }
}

/// Queues an item for `object`. Returns the sender's work when this request must start it:
/// the caller runs it in `waitUntil` (or awaits it, when already running in one).
pub fn enqueue_to<S: Sink>(env: &Env, object: &str, item: S::Item) -> Option<impl Future<Output = ()> + 'static> {
    let starts = S::queues().with(|queues| {
        let mut queues = queues.borrow_mut();
        let queue = queues.entry(object.to_string()).or_default();
        queue.pending.push(item);
        !std::mem::replace(&mut queue.sending, true)
    });
    starts.then(|| send_queued::<S>(env.clone(), object.to_string()))
}

/// Sends the object's queue, again and again while items keep arriving.
async fn send_queued<S: Sink>(env: Env, object: String) {
    // Clears `sending` however this ends, so that a later request starts a new sender.
    let _sending = Sending::<S>(&object, std::marker::PhantomData);
    let started = now_ms();
    while now_ms().saturating_sub(started) < SENDER_MAX_MS {
        if S::GATHER_MS > 0 {
            Delay::from(Duration::from_millis(S::GATHER_MS)).await;
        }
        let batch = S::queues().with(|queues| {
            let mut queues = queues.borrow_mut();
            let Some(queue) = queues.get_mut(&object) else { return Vec::new() };
            let take = queue.pending.len().min(S::MAX_BATCH);
            queue.pending.drain(..take).collect::<Vec<_>>()
        });
        if batch.is_empty() {
            return;
        }
        send::<S>(&env, &object, &batch).await;
    }
}

struct Sending<'a, S: Sink>(&'a str, std::marker::PhantomData<S>);

impl<S: Sink> Drop for Sending<'_, S> {
    fn drop(&mut self) {
        S::queues().with(|queues| {
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

/// One call for the whole batch, retried; a batch every try failed is logged.
async fn send<S: Sink>(env: &Env, object: &str, batch: &[S::Item]) {
    let mut failure = String::new();
    for wait_ms in std::iter::once(0).chain(RETRY_MS) {
        if wait_ms > 0 {
            Delay::from(Duration::from_millis(wait_ms)).await;
        }
        match S::send(env, object, batch).await {
            Ok(()) => return,
            Err(e) => failure = e,
        }
    }
    let ids: Vec<&str> = batch.iter().map(S::id).collect();
    console_error!("sending {} items to {object} failed after retries ({failure}): {ids:?}", batch.len());
}

/// Settlements of keys that hold nothing, batched per key ledger.
struct LedgerSettlements;

thread_local! {
    static SETTLEMENTS: RefCell<Queues<SettleRequest>> = RefCell::new(HashMap::new());
}

impl Sink for LedgerSettlements {
    type Item = SettleRequest;
    const MAX_BATCH: usize = 128;
    // Nothing on the request path reads these keys' spend (they hold no reservation), so a
    // short wait costs only `/key/info` 20 ms of staleness (LiteLLM batches spend for seconds).
    const GATHER_MS: u64 = 20;

    fn queues() -> &'static LocalKey<RefCell<Queues<SettleRequest>>> {
        &SETTLEMENTS
    }

    async fn send(env: &Env, ledger: &str, batch: &[SettleRequest]) -> Result<(), String> {
        let results = LedgerStub::open(env, ledger).map_err(|e| e.message)?.settle_batch(batch).await;
        for (request, settled) in batch.iter().zip(&results.map_err(|e| e.message)?) {
            report_soft_budget(request, settled);
        }
        Ok(())
    }

    fn id(item: &SettleRequest) -> &str {
        &item.settlement.id
    }
}

/// Queues a settlement for `ledger` (see `enqueue_to`).
pub fn enqueue(env: &Env, ledger: &str, request: SettleRequest) -> Option<impl Future<Output = ()> + 'static> {
    enqueue_to::<LedgerSettlements>(env, ledger, request)
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
