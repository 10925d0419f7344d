//! `make profile`: the CPU of each pure step the worker runs per request, measured natively.
//!
//! Every step runs on realistic inputs (a chat request of about 1.5 KB and one with a 30 KB
//! history, a Databricks answer, a streamed answer of 40 chunks, a key, a log line, a limited
//! key's ledger) many times, in the order the worker runs them. Two figures per step:
//!
//! - instructions per request, counted by valgrind's callgrind (exact and repeatable, whatever
//!   else the machine is doing): the harness re-runs itself under callgrind and marks each step
//!   with client requests (zero the counters, run the step, dump them under the step's name);
//! - native nanoseconds per request, the best of a few timed runs (noisy on a shared machine).
//!
//! The counts are x86-64 instructions with glibc's allocator; the worker runs the same code as
//! wasm under V8 with dlmalloc, so absolute figures differ, but the ranking is what matters.
//!
//! `cargo run --release --example profile_steps [-- --no-valgrind] [-- --filter NAME]`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use databricks_gateway::databricks;
use databricks_gateway::endpoints;
use databricks_gateway::fields::FromJson;
use databricks_gateway::ids;
use databricks_gateway::keys::{self, KeyRecord};
use databricks_gateway::ledger::messages::{SettleRequest, SpendLogRow};
use databricks_gateway::ledger::{AdmitRequest, Decision, Entry, EntryState, LedgerState, Limits, Settled, Settlement};
use databricks_gateway::log::RequestLog;
use databricks_gateway::money::Money;
use databricks_gateway::openai::{self, Kind, Usage};
use databricks_gateway::pricing::{PriceSource, Prices};
use databricks_gateway::prompt::{self, PromptTally, Template};
use databricks_gateway::secret::Secret;
use databricks_gateway::stream::ChatStreamRelay;
use databricks_gateway::wire::StreamRelay;
use serde_json::{json, Value};

/// Valgrind client requests (valgrind.h, callgrind.h): a no-op when not under valgrind.
mod valgrind {
    const RUNNING_ON_VALGRIND: u64 = 0x1001;
    const CALLGRIND_BASE: u64 = ((b'C' as u64) << 24) | ((b'T' as u64) << 16);
    const ZERO_STATS: u64 = CALLGRIND_BASE + 1;
    const DUMP_STATS_AT: u64 = CALLGRIND_BASE + 3;

    #[cfg(target_arch = "x86_64")]
    fn request(default: u64, args: [u64; 6]) -> u64 {
        let result;
        // SAFETY: valgrind's "special instruction" sequence: the four rotations of %rdi add up
        // to 128 bits (no change) and `xchg %rbx,%rbx` is a no-op, natively; under valgrind it
        // reads the request from the array %rax points to and answers in %rdx.
        unsafe {
            std::arch::asm!(
                "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51",
                "xchg rbx, rbx",
                inout("rdx") default => result,
                in("rax") args.as_ptr(),
                out("rdi") _,
                options(nostack),
            );
        }
        result
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn request(default: u64, _args: [u64; 6]) -> u64 {
        default
    }

    pub fn running() -> bool {
        request(0, [RUNNING_ON_VALGRIND, 0, 0, 0, 0, 0]) != 0
    }

    pub fn zero_stats() {
        request(0, [ZERO_STATS, 0, 0, 0, 0, 0]);
    }

    pub fn dump_stats_at(name: &str) {
        let name = std::ffi::CString::new(name).unwrap();
        request(0, [DUMP_STATS_AT, name.as_ptr() as u64, 0, 0, 0, 0]);
    }
}

// ------------------------------------------------------------------------------ fixtures

const MODEL: &str = "databricks-gpt-5-1";
const ENDPOINT: &str = "databricks-gpt-5-1";
const KEY: &str = "sk-Zq3v8Jd0Hk2LwP9xT4rN7bY1cF6mS5aE";
const CALL_ID: &str = "3f2c1e9a-7b4d-4c8e-9a1f-0d2b6e5c7a84";

/// Deterministic prose of about `len` bytes, with some non-ASCII text as real prompts have.
fn prose(seed: usize, len: usize) -> String {
    const WORDS: [&str; 24] = [
        "the",
        "gateway",
        "forwards",
        "every",
        "request",
        "to",
        "Databricks",
        "and",
        "relays",
        "its",
        "answer",
        "unchanged,",
        "except",
        "for",
        "the",
        "model",
        "name;",
        "café",
        "résumé",
        "naïve",
        "latency",
        "budget",
        "tokens",
        "stream.",
    ];
    let mut out = String::with_capacity(len + 16);
    let mut i = seed;
    while out.len() < len {
        out.push_str(WORDS[i % WORDS.len()]);
        out.push(' ');
        i = i.wrapping_mul(7).wrapping_add(3);
    }
    out
}

fn tool() -> Value {
    json!({"type": "function", "function": {
        "name": "search_knowledge_base",
        "description": "Search the support knowledge base and return the ids and titles of matching articles.",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string", "description": "What to search for"},
            "limit": {"type": "integer", "description": "How many articles at most", "minimum": 1, "maximum": 20}},
            "required": ["query"]}}})
}

/// A chat request of about 1.5 KB: a system prompt, two turns, one tool.
fn small_request(stream: bool) -> Vec<u8> {
    let mut body = json!({
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant for the ACME support team. Answer concisely, cite the knowledge-base article ids you used, and ask a clarifying question when the request is ambiguous."},
            {"role": "user", "content": prose(1, 250)},
            {"role": "assistant", "content": prose(2, 300)},
            {"role": "user", "content": prose(3, 120)},
        ],
        "tools": [tool()],
        "temperature": 0.2,
        "max_tokens": 512,
        "user": "user-1234",
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    serde_json::to_vec(&body).unwrap()
}

/// A chat request carrying a 30 KB conversation history.
fn history_request() -> Vec<u8> {
    let mut messages = vec![json!({"role": "system", "content": "You are a careful assistant."})];
    for i in 0..40 {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": prose(i, 740)}));
    }
    serde_json::to_vec(&json!({"model": MODEL, "messages": messages, "temperature": 0.7, "max_tokens": 1024})).unwrap()
}

/// What Databricks answers a chat request (the fake's shape, a 600-byte reply).
fn answer() -> Vec<u8> {
    serde_json::to_vec(&json!({
        "id": "chatcmpl_9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "databricks-gpt-5-1-served",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": prose(5, 600), "tool_calls": null},
                     "finish_reason": "stop", "logprobs": null}],
        "usage": {"prompt_tokens": 412, "completion_tokens": 131, "total_tokens": 543},
        "system_fingerprint": null,
    }))
    .unwrap()
}

pub const STREAM_CHUNKS: usize = 40;

/// A streamed answer as Databricks sends it: a role chunk, `STREAM_CHUNKS` content chunks with
/// the cumulative usage on each, `[DONE]`; one upstream read per event.
fn stream_reads() -> Vec<Vec<u8>> {
    let chunk = |delta: Value, finish: Value, completion: u64| {
        let c = json!({
            "id": "chatcmpl_9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a",
            "object": "chat.completion.chunk",
            "created": 1767225600,
            "model": "databricks-gpt-5-1-served",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
            "usage": {"prompt_tokens": 412, "completion_tokens": completion, "total_tokens": 412 + completion},
        });
        format!("data: {c}\n\n").into_bytes()
    };
    let mut reads = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null, 0)];
    for i in 0..STREAM_CHUNKS {
        let finish = if i + 1 == STREAM_CHUNKS { json!("stop") } else { Value::Null };
        reads.push(chunk(json!({"content": format!("{} ", prose(i, 12).trim())}), finish, i as u64 * 3 + 3));
    }
    reads.push(b"data: [DONE]\n\n".to_vec());
    reads
}

fn key_record() -> KeyRecord {
    let mut r = KeyRecord::new(KEY, "0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5".into(), 1_767_225_600_000);
    r.key_alias = Some("bench-limited".into());
    r.models = vec![MODEL.into(), "databricks-claude-sonnet-4-5".into()];
    r.rpm_limit = Some(100_000_000);
    r.tpm_limit = Some(1_000_000_000_000);
    r.max_parallel_requests = Some(10_000);
    r.max_budget = Some(Money::from_pico(1_000_000 * 1_000_000_000_000));
    r.metadata = json!({"team": "support", "owner": "alice@example.com"}).as_object().unwrap().clone();
    r.tags = vec!["prod".into(), "support".into()];
    r.user_id = Some("alice".into());
    r
}

fn prices() -> Prices {
    Prices {
        input: Money::from_pico(1_249_990),
        output: Money::from_pico(9_999_990),
        cache_read: Money::from_pico(1_249_990),
        cache_creation: Money::from_pico(1_249_990),
        source: PriceSource::Config,
    }
}

fn admit_request(id: String, limits: Limits) -> AdmitRequest {
    AdmitRequest {
        id,
        model: MODEL.into(),
        key_hash: Some(keys::hash_key(KEY)),
        prompt_tokens_estimate: 420,
        prompt_tokens_bound: 1_200,
        max_tokens: Some(512),
        choices: 1,
        output_cap: 16_384,
        prices: prices(),
        lease_ms: 660_000,
        limits,
        access_groups: Vec::new(),
    }
}

fn settlement(id: String, limits: Limits) -> Settlement {
    Settlement { id, prompt_tokens: 412, completion_tokens: 131, cost: Money::from_pico(1_825_000_000), limits }
}

fn spend_row() -> SpendLogRow {
    SpendLogRow {
        request_id: "chatcmpl_9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a".into(),
        call_id: CALL_ID.into(),
        api_key: keys::hash_key(KEY),
        key_alias: Some("bench-limited".into()),
        model_group: MODEL.into(),
        deployment: "gpt51-primary".into(),
        prompt_tokens: 412,
        cache_read_tokens: 0,
        cache_creation_tokens: 0,
        completion_tokens: 131,
        spend: Money::from_pico(1_825_000_000),
        start_time: 1_767_225_600_000,
        end_time: 1_767_225_600_412,
        status: 200,
        streamed: false,
        estimated: false,
        ..Default::default()
    }
}

fn log_line() -> RequestLog {
    let mut log = RequestLog {
        call_id: CALL_ID.into(),
        method: "POST".into(),
        route: "/v1/chat/completions".into(),
        status: 200,
        key_hash: Some(keys::hash_key(KEY)[..16].to_string()),
        key_alias: Some("bench-limited".into()),
        model: Some(MODEL.into()),
        deployment: Some("gpt51-primary".into()),
        stream: Some(false),
        upstream_status: Some(200),
        upstream_ms: Some(412),
        total_ms: 415,
        cost: Some(Money::from_pico(1_825_000_000).to_string()),
        ..Default::default()
    };
    log.set_usage(Some(Usage::plain(412, 131)));
    log
}

/// A limited key's ledger holding `window` settled requests of the last 60 s, and the pool of
/// ids its admissions use (long enough that an id comes back only after it left the window).
struct Ledger {
    state: LedgerState,
    now: u64,
    step_ms: u64,
    ids: Vec<String>,
    next: usize,
    limits: Limits,
}

impl Ledger {
    fn new(window: usize) -> Self {
        let limits = Limits::from_key(&key_record());
        let step_ms = 60_000 / window.max(1) as u64;
        let ids: Vec<String> = (0..window * 2 + 16).map(|i| format!("{i:08x}-7b4d-4c8e-9a1f-0d2b6e5c7a84")).collect();
        let now = 1_767_225_600_000u64;
        let entries: Vec<Entry> = (ids.iter().take(window).enumerate())
            .map(|(i, id)| Entry {
                id: id.clone(),
                at: now - (window - i) as u64 * step_ms,
                model: MODEL.into(),
                tokens: 543,
                state: EntryState::Settled,
            })
            .collect();
        let state = LedgerState { key_hash: Some(keys::hash_key(KEY)), entries: entries.into(), ..Default::default() };
        Ledger { state, now, step_ms, ids, next: window, limits }
    }

    /// One request: admitted, then settled, as the object runs them (state kept between).
    fn admit_and_settle(&mut self, admit: &mut AdmitRequest, settle: &mut Settlement) -> (Decision, Settled) {
        let id = &self.ids[self.next % self.ids.len()];
        self.next += 1;
        self.now += self.step_ms;
        admit.id.clone_from(id);
        settle.id.clone_from(id);
        let decision = self.state.admit(admit, self.now);
        let settled = self.state.settle(settle, self.now + 1);
        // The object's save drains these.
        self.state.changed.clear();
        self.state.removed.clear();
        (decision, settled)
    }

    /// One request of a key without limits: settled (in a batch), never admitted.
    fn settle_only(&mut self, settle: &mut Settlement) -> Settled {
        let id = &self.ids[self.next % self.ids.len()];
        self.next += 1;
        self.now += self.step_ms;
        settle.id.clone_from(id);
        let settled = self.state.settle(settle, self.now);
        self.state.changed.clear();
        self.state.removed.clear();
        settled
    }
}

// ------------------------------------------------------------------------------ steps

struct Step {
    name: &'static str,
    /// What one run of `run` is: a request, a stream, a chunk.
    per: &'static str,
    iters: u32,
    run: Box<dyn FnMut()>,
}

fn step(name: &'static str, per: &'static str, iters: u32, run: impl FnMut() + 'static) -> Step {
    Step { name, per, iters, run: Box::new(run) }
}

fn steps() -> Vec<Step> {
    let small = small_request(false);
    let small_stream = small_request(true);
    let history = history_request();
    let answer = answer();
    let reads = stream_reads();
    let parsed_small = openai::parse_request(Kind::Chat, &small).unwrap();
    let parsed_history = openai::parse_request(Kind::Chat, &history).unwrap();
    let parsed_stream = openai::parse_request(Kind::Chat, &small_stream).unwrap();
    eprintln!(
        "inputs: request {} B, history request {} B, stream request {} B, answer {} B, stream {} B in {} reads",
        small.len(),
        history.len(),
        small_stream.len(),
        answer.len(),
        reads.iter().map(Vec::len).sum::<usize>(),
        reads.len()
    );

    let mut out = Vec::new();

    // Arrival: the call id, the route, the key.
    out.push(step("ids::uuid_v4 (call id)", "request", 2000, || {
        black_box(ids::uuid_v4().unwrap());
    }));
    out.push(step("routes: parse + loggable_path", "request", 2000, || {
        black_box(endpoints::Endpoint::parse(black_box("/v1/chat/completions")));
        black_box(endpoints::loggable_path(black_box("/v1/chat/completions")));
    }));
    out.push(step("keys::hash_key (sha256 + hex)", "request", 2000, || {
        black_box(keys::hash_key(black_box(KEY)));
    }));
    let record = key_record();
    out.push(step("KeyRecord clone (isolate cache hit)", "request", 2000, move || {
        black_box(black_box(&record).clone());
    }));
    let record_json = serde_json::to_string(&key_record()).unwrap();
    out.push(step("KeyRecord from KV JSON (cache miss)", "request", 500, move || {
        let value: serde_json::Value = serde_json::from_slice(black_box(record_json.as_bytes())).unwrap();
        black_box(KeyRecord::from_json(&value).unwrap());
    }));

    // The request body.
    for (name, bytes, iters) in [
        ("openai::parse_request (1.5 KB)", small.clone(), 500),
        ("openai::parse_request (30 KB history)", history.clone(), 40),
    ] {
        out.push(step(name, "request", iters, move || {
            black_box(openai::parse_request(Kind::Chat, black_box(&bytes)).unwrap());
        }));
    }
    {
        let parsed = parsed_small.clone();
        // Nothing to drop: the body is left as it was, so each run can take the same one.
        let mut body = parsed.body;
        out.push(step("databricks::drop_params (1.5 KB, off)", "request", 2000, move || {
            black_box(databricks::drop_params(Kind::Chat, black_box(&mut body), false));
        }));
    }
    let small_body = parsed_small.body.clone();
    out.push(step("  (baseline: body Map clone 1.5 KB)", "request", 2000, move || {
        black_box(black_box(&small_body).clone());
    }));
    for (name, body, iters) in [
        ("PromptTally + estimate + bound (1.5 KB)", parsed_small.body.clone(), 1000),
        ("PromptTally + estimate + bound (30 KB)", parsed_history.body.clone(), 100),
    ] {
        out.push(step(name, "request", iters, move || {
            let body = black_box(&body);
            let tally = PromptTally::of(Kind::Chat, body);
            let template = Template::for_endpoint(ENDPOINT);
            black_box((tally.estimate(), tally.bound(&template), prompt::choices(body)));
            black_box(databricks::upstream_max_tokens(Kind::Chat, body, ENDPOINT));
        }));
    }

    // One attempt: the runtime clones the body, translates it and encodes it.
    for (name, body, stream, iters) in [
        ("attempt: clone + prepare_body + to_vec (1.5 KB)", parsed_small.body.clone(), false, 500),
        ("attempt: clone + prepare_body + to_vec (30 KB)", parsed_history.body.clone(), false, 40),
        ("attempt: clone + prepare_body + to_vec (stream)", parsed_stream.body.clone(), true, 500),
    ] {
        out.push(step(name, "attempt", iters, move || {
            let mut body = black_box(&body).clone();
            databricks::prepare_body(Kind::Chat, &mut body, ENDPOINT, stream, None);
            black_box(serde_json::to_vec(&body).unwrap());
        }));
    }
    // The same attempt as `databricks::prepared_payload` writes it (no copy of the messages);
    // the runtime does not call it yet.
    for (name, body, stream, iters) in [
        ("attempt, if adopted: prepared_payload (1.5 KB)", parsed_small.body.clone(), false, 500),
        ("attempt, if adopted: prepared_payload (30 KB)", parsed_history.body.clone(), false, 40),
        ("attempt, if adopted: prepared_payload (stream)", parsed_stream.body.clone(), true, 500),
    ] {
        out.push(step(name, "attempt", iters, move || {
            black_box(databricks::prepared_payload(Kind::Chat, black_box(&body), ENDPOINT, stream, None));
        }));
    }
    let history_body = parsed_history.body.clone();
    out.push(step("  (baseline: body Map clone 30 KB)", "attempt", 100, move || {
        black_box(black_box(&history_body).clone());
    }));

    // The answer.
    {
        let answer = answer.clone();
        out.push(step("databricks::normalize_answer (chat)", "request", 500, move || {
            black_box(databricks::normalize_answer(Kind::Chat, black_box(&answer), MODEL, false).unwrap());
        }));
    }
    {
        let reads = reads.clone();
        out.push(step("stream: ChatStreamRelay, 40 chunks, with usage", "stream", 40, move || {
            let mut relay = ChatStreamRelay::new(MODEL, vec![Secret::new("dapi-fake-token".into())], true);
            for read in &reads {
                black_box(relay.feed(black_box(read)));
            }
            black_box(relay.finish());
        }));
    }
    {
        let reads = reads.clone();
        out.push(step("stream: ChatStreamRelay, 40 chunks, no usage", "stream", 40, move || {
            let mut relay = ChatStreamRelay::new(MODEL, vec![Secret::new("dapi-fake-token".into())], false);
            for read in &reads {
                black_box(relay.feed(black_box(read)));
            }
            black_box(relay.finish());
        }));
    }

    // Accounting and the answer's headers (the pure part: the strings the runtime sets).
    out.push(step("cost + headers' strings", "request", 2000, || {
        let usage = Usage::plain(412, 131);
        let cost = black_box(prices()).cost(&usage);
        let mut headers: Vec<(&'static str, String)> = Vec::with_capacity(16);
        headers.push(("x-litellm-model-group", MODEL.to_string()));
        headers.push(("x-litellm-model-id", "gpt51-primary".to_string()));
        headers.push(("x-litellm-model-api-base", "http://127.0.0.1:4010/serving-endpoints".to_string()));
        headers.push(("x-litellm-response-duration-ms", black_box(415u64).to_string()));
        headers.push(("x-litellm-overhead-duration-ms", black_box(3u64).to_string()));
        headers.push(("x-litellm-attempted-retries", black_box(0u32).to_string()));
        headers.push(("x-litellm-attempted-fallbacks", black_box(0u32).to_string()));
        headers.push(("x-litellm-response-cost", cost.to_string()));
        headers.push(("x-litellm-key-spend", Money::from_pico(black_box(123_456_789_000)).to_string()));
        black_box(headers);
    }));
    let log = log_line();
    out.push(step("log::RequestLog::to_line", "request", 2000, move || {
        black_box(black_box(&log).to_line());
    }));

    // A limited key's ledger: the object's rules and the JSON both sides exchange.
    for (name, window, iters) in [
        ("limiter admit+settle, window 0", 0usize, 1000u32),
        ("limiter admit+settle, window 100", 100, 500),
        ("limiter admit+settle, window 2000", 2000, 40),
        ("limiter admit+settle, window 15000", 15_000, 20),
    ] {
        let mut ledger = Ledger::new(window);
        let mut admit = admit_request(String::new(), ledger.limits.clone());
        let mut settle = settlement(String::new(), ledger.limits.clone());
        out.push(step(name, "request", iters, move || {
            black_box(ledger.admit_and_settle(&mut admit, &mut settle));
        }));
    }
    {
        // A key without limits at 250 req/s: its ledger keeps 15,000 settlements for the window.
        let mut ledger = Ledger::new(15_000);
        let mut settle = settlement(String::new(), Limits::default());
        out.push(step("unadmitted settle, window 15000", "request", 200, move || {
            black_box(ledger.settle_only(&mut settle));
        }));
    }
    {
        let limits = Limits::from_key(&key_record());
        let admit = admit_request(CALL_ID.into(), limits.clone());
        let settle = SettleRequest { settlement: settlement(CALL_ID.into(), limits), row: Some(spend_row()) };
        let mut state = Ledger::new(100);
        let (decision, settled) = state.admit_and_settle(&mut admit.clone(), &mut settle.settlement.clone());
        let entry = state.state.entries.iter().last().unwrap().clone();
        let record = key_record();
        let saved = entry.clone();
        out.push(step("ledger JSON: admit round trip", "request", 500, move || {
            // Worker: the AdmitRequest (built from the key's limits) out; the object: in, its
            // Decision out as a Value, then as text, and the changed entry saved; the worker:
            // the Decision in.
            let limits = Limits::from_key(black_box(&record));
            let request = AdmitRequest { limits, ..black_box(&admit).clone() };
            let json = serde_json::to_string(&request).unwrap();
            let request: AdmitRequest = serde_json::from_slice(json.as_bytes()).unwrap();
            black_box(&request);
            let answer = serde_json::to_value(black_box(&decision)).unwrap().to_string();
            black_box(serde_json::to_string(black_box(&saved)).unwrap());
            black_box(serde_json::from_slice::<Decision>(answer.as_bytes()).unwrap());
        }));
        out.push(step("ledger JSON: settle round trip", "request", 500, move || {
            // The same for the settlement, whose spend log row the object stores as JSON.
            let json = serde_json::to_string(black_box(&settle)).unwrap();
            let request: SettleRequest = serde_json::from_slice(json.as_bytes()).unwrap();
            black_box(serde_json::to_string(request.row.as_ref().unwrap()).unwrap());
            let answer = serde_json::to_value(black_box(&settled)).unwrap().to_string();
            black_box(serde_json::to_string(black_box(&entry)).unwrap());
            black_box(serde_json::from_slice::<Settled>(answer.as_bytes()).unwrap());
        }));
    }
    out
}

// ------------------------------------------------------------------------------ driver

/// Under callgrind: each step once to warm up (lazy statics, first allocations), then its
/// iterations between a zeroing and a dump named after it.
fn measure_under_valgrind(mut steps: Vec<Step>) {
    for s in &mut steps {
        (s.run)();
        valgrind::zero_stats();
        for _ in 0..s.iters {
            (s.run)();
        }
        valgrind::dump_stats_at(&format!("step:{}", s.name));
    }
}

/// Native time per run: the best of five timed batches.
fn native_ns(s: &mut Step) -> f64 {
    (s.run)();
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..s.iters {
                (s.run)();
            }
            start.elapsed().as_nanos() as f64 / s.iters as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// Instructions per step, from the dumps callgrind wrote (`step:NAME` → total over its iterations).
fn callgrind_counts(filter: Option<&str>) -> Option<BTreeMap<String, u64>> {
    let dir = std::env::temp_dir().join(format!("profile-steps-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ok()?;
    let out = dir.join("callgrind.out");
    let exe = std::env::current_exe().ok()?;
    let mut cmd = std::process::Command::new("valgrind");
    cmd.args(["--tool=callgrind", "--dump-line=no", "--dump-instr=no", "--compress-strings=no"])
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&exe)
        .arg("--child");
    if let Some(f) = filter {
        cmd.args(["--filter", f]);
    }
    let status = cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().ok()?;
    if !status.success() {
        eprintln!("valgrind failed ({status}); instruction counts left out");
        return None;
    }
    let mut counts = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).ok()?.flatten() {
        let text = std::fs::read_to_string(entry.path()).ok()?;
        let name = text.lines().find_map(|l| l.strip_prefix("desc: Trigger: Client Request: step:"));
        let total = text.lines().find_map(|l| l.strip_prefix("summary: ").or_else(|| l.strip_prefix("totals: ")));
        if let (Some(name), Some(total)) = (name, total.and_then(|t| t.trim().parse::<u64>().ok())) {
            counts.insert(name.to_string(), total);
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    Some(counts)
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const MASTER: [&str; 9] = [
    "ids::uuid_v4 (call id)",
    "routes: parse + loggable_path",
    "openai::parse_request (1.5 KB)",
    "databricks::drop_params (1.5 KB, off)",
    "PromptTally + estimate + bound (1.5 KB)",
    "attempt: clone + prepare_body + to_vec (1.5 KB)",
    "databricks::normalize_answer (chat)",
    "cost + headers' strings",
    "log::RequestLog::to_line",
];
const VKEY: [&str; 4] = [
    "keys::hash_key (sha256 + hex)",
    "KeyRecord clone (isolate cache hit)",
    "ledger JSON: settle round trip",
    "limiter admit+settle, window 0",
];
const STREAM: [&str; 9] = [
    "ids::uuid_v4 (call id)",
    "routes: parse + loggable_path",
    "openai::parse_request (1.5 KB)",
    "databricks::drop_params (1.5 KB, off)",
    "PromptTally + estimate + bound (1.5 KB)",
    "attempt: clone + prepare_body + to_vec (stream)",
    "stream: ChatStreamRelay, 40 chunks, no usage",
    "cost + headers' strings",
    "log::RequestLog::to_line",
];

/// The steps each of the bench's rows runs. A key without limits settles without a window:
/// its limiter cost is counted as the admit+settle with none (a few thousand too many).
fn paths() -> Vec<(&'static str, Vec<&'static str>)> {
    let vkey: Vec<&str> = MASTER.iter().chain(&VKEY).copied().collect();
    let limited = |window: &'static str| {
        let mut names: Vec<&str> = vkey.iter().map(|n| if n.starts_with("limiter") { window } else { n }).collect();
        names.push("ledger JSON: admit round trip");
        names
    };
    let adopted = MASTER
        .iter()
        .map(|n| if n.starts_with("attempt") { "attempt, if adopted: prepared_payload (1.5 KB)" } else { n })
        .collect();
    vec![
        ("master (chat)", MASTER.to_vec()),
        ("vkey (chat): master + key + settle", vkey.clone()),
        ("limited (chat), window 100", limited("limiter admit+settle, window 100")),
        ("limited (chat), window 2000", limited("limiter admit+settle, window 2000")),
        ("master stream (40 chunks)", STREAM.to_vec()),
        ("master (chat), prepared_payload adopted", adopted),
    ]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let filter = args.iter().position(|a| a == "--filter").and_then(|i| args.get(i + 1)).cloned();
    let mut steps = steps();
    if let Some(f) = &filter {
        steps.retain(|s| s.name.contains(f.as_str()));
    }
    if valgrind::running() || args.iter().any(|a| a == "--child") {
        measure_under_valgrind(steps);
        return;
    }
    let counts = if args.iter().any(|a| a == "--no-valgrind") { None } else { callgrind_counts(filter.as_deref()) };
    let rows: Vec<(String, &'static str, Option<u64>, f64)> = steps
        .iter_mut()
        .map(|s| {
            let ir = counts.as_ref().and_then(|c| c.get(s.name)).map(|total| total / s.iters as u64);
            (s.name.to_string(), s.per, ir, native_ns(s))
        })
        .collect();

    println!("| # | step (in request order) | per | instructions | native µs |");
    println!("|--:|---|---|--:|--:|");
    for (i, (name, per, ir, ns)) in rows.iter().enumerate() {
        let ir = ir.map_or("-".to_string(), thousands);
        println!("| {} | {name} | {per} | {ir} | {:.2} |", i + 1, ns / 1000.0);
    }
    if let Some(counts) = &counts {
        let per_run = |name: &str| -> u64 {
            let s = steps.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no step {name}"));
            counts.get(name).map_or(0, |total| total / s.iters as u64)
        };
        println!("\nPure instructions per request, by path (the bench's rows, a 1.5 KB request):");
        for (path, names) in paths() {
            let total: u64 = names.iter().map(|n| per_run(n)).sum();
            println!("  {path:<40} {:>12}", thousands(total));
        }
        let mut ranked: Vec<_> = rows.iter().filter(|r| !r.0.starts_with(' ')).collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.2.unwrap_or(0)));
        println!("\nRanking by instructions:");
        for (i, (name, per, ir, _)) in ranked.iter().enumerate() {
            println!("{:>3}. {:>12}  {name} (per {per})", i + 1, thousands(ir.unwrap_or(0)));
        }
    }
}
