//! The chat completions handler: the order of one proxied request, step by step.

use futures_channel::mpsc;
use futures_util::StreamExt;
use serde_json::Value;
use worker::{AbortController, ByteStream, Headers, Request, Response};

use super::accounting::{self, Account, Outcome};
use super::upstream::{self, within, Upstream};
use super::{bytes_response, now_ms, read_body, runtime_error, unknown_model, vars, Call, Caller};
use crate::config::Deployment;
use crate::databricks::{self, Answer, Usage};
use crate::embedded;
use crate::log::RequestLog;
use crate::openai::{self, ApiError, ChatRequest};
use crate::pricing;
use crate::secret::Secret;
use crate::stream::ChatStreamRelay;

/// `POST /chat/completions` for an authenticated caller:
/// parse → resolve the model (the key's aliases and allowed models) → admit (limits, budget)
/// → forward → relay the answer or stream → settle the usage (on every path) → log.
pub async fn chat(mut req: Request, call: &mut Call<'_>, caller: Caller) -> Result<Response, ApiError> {
    let bytes = read_body(&mut req).await?;
    let ChatRequest { model, stream, mut body } = openai::parse_chat_request(&bytes)?;
    drop(bytes);

    let config = embedded::config().map_err(ApiError::internal)?;
    let group = match &caller {
        Caller::Master => model.clone(),
        Caller::Key(record) => record.resolve_model(&model)?,
    };
    let deployment = config.deployment_for(&group).ok_or_else(|| unknown_model(&model))?;
    call.log.model = Some(group.clone());
    call.log.deployment = Some(deployment.id.clone());
    call.log.stream = Some(stream);
    call.headers.push(("x-litellm-model-group", group.clone()));
    call.headers.push(("x-litellm-model-id", deployment.id.clone()));

    let api_base = vars::resolve(call.env, &deployment.api_base)?;
    let token = vars::resolve(call.env, &deployment.api_key)?;
    call.headers.push(("x-litellm-model-api-base", api_base.expose().to_string()));
    databricks::prepare_chat_body(&mut body, &deployment.endpoint, stream);
    let mut payload = encode(&body)?;

    // The payload's size in bytes bounds its prompt tokens from above (a token is at least a
    // byte), so a budget reserved with it is never overshot by the prompt.
    let prompt_bytes = payload.len() as u64;
    let mut account = Account::open(call, &caller, &group, deployment, config.enforce_model_rate_limits, stream)?;
    let max_tokens = body.get("max_tokens").and_then(Value::as_u64);
    if let Some(imposed) = account.admit(call, prompt_bytes, max_tokens).await? {
        body.insert("max_tokens".into(), imposed.into());
        payload = encode(&body)?;
    }
    drop(body);

    let url = databricks::url(api_base.expose(), "chat/completions");
    let forwarded = forward(call, &url, &token, payload, deployment, stream, &model).await;
    match forwarded {
        Err(error) => {
            accounting::settle_failed(account, error.status, call).await;
            Err(error)
        }
        Ok(Forwarded::Stream { body, controller }) => {
            let pump = StreamPump::new(body, controller, call, &model, token, deployment, account, prompt_bytes);
            relay_stream(pump, call)
        }
        Ok(Forwarded::Answer(Answer { bytes, usage, id })) => {
            call.log.set_usage(usage);
            let outcome = Outcome { usage, estimated: false, status: 200, response_id: id };
            let cost = account.cost(&outcome);
            accounting::log_cost(call, account.prices(), cost);
            call.headers.push(("x-litellm-response-cost", pricing::format_usd(cost)));
            if account.settles_first() {
                if let Some(spend) = account.settle(outcome).await {
                    call.headers.push(("x-litellm-key-spend", pricing::format_usd(spend)));
                }
            } else if !account.has_no_ledger() {
                call.ctx.wait_until(async move {
                    account.settle(outcome).await;
                });
            }
            bytes_response(200, bytes)
        }
    }
}

fn encode(body: &serde_json::Map<String, Value>) -> Result<Vec<u8>, ApiError> {
    serde_json::to_vec(body).map_err(|e| ApiError::internal(format!("cannot encode the request: {e}")))
}

/// What Databricks answered: a whole answer, or a stream whose headers arrived.
enum Forwarded {
    Answer(Answer),
    Stream { body: ByteStream, controller: AbortController },
}

/// Sends the request and reads the answer (or the start of the stream) within the timeout.
async fn forward(
    call: &mut Call<'_>,
    url: &str,
    token: &Secret,
    payload: Vec<u8>,
    deployment: &Deployment,
    stream: bool,
    model: &str,
) -> Result<Forwarded, ApiError> {
    let upstream_started = now_ms();
    let Upstream { mut response, controller } =
        upstream::post_json(url, token, payload, deployment.timeout_ms).await.inspect_err(|_| {
            call.log.upstream_ms = Some(now_ms().saturating_sub(upstream_started));
        })?;
    let status = response.status_code();
    call.log.upstream_status = Some(status);
    let remaining_ms = deployment.timeout_ms.saturating_sub(now_ms().saturating_sub(upstream_started));

    if !(200..300).contains(&status) {
        // The error body is read within what is left of the timeout; an unreadable one is empty.
        let body = match within(remaining_ms, response.bytes()).await {
            Some(result) => result.unwrap_or_default(),
            None => {
                controller.abort();
                Vec::new()
            }
        };
        let mut error = databricks::upstream_error(status, &body, &[token.expose()]);
        error.retry_after_s = response.headers().get("retry-after").ok().flatten().and_then(|v| v.trim().parse().ok());
        set_durations(call, upstream_started);
        return Err(error);
    }

    if stream {
        let body = response.stream().map_err(runtime_error)?;
        set_durations(call, upstream_started);
        return Ok(Forwarded::Stream { body, controller });
    }

    let body = match within(remaining_ms, response.bytes()).await {
        Some(Ok(body)) => body,
        Some(Err(e)) => {
            return Err(ApiError::bad_gateway(format!(
                "The connection to Databricks broke while reading the answer: {e}"
            )))
        }
        None => {
            controller.abort();
            return Err(upstream::timed_out(deployment.timeout_ms));
        }
    };
    set_durations(call, upstream_started);
    databricks::normalize_chat_completion(&body, model).map(Forwarded::Answer)
}

/// Records the upstream time and adds LiteLLM's duration headers.
fn set_durations(call: &mut Call<'_>, upstream_started: u64) {
    let now = now_ms();
    let upstream_ms = now.saturating_sub(upstream_started);
    let total_ms = now.saturating_sub(call.started_ms);
    call.log.upstream_ms = Some(upstream_ms);
    call.headers.push(("x-litellm-response-duration-ms", total_ms.to_string()));
    call.headers.push(("x-litellm-overhead-duration-ms", total_ms.saturating_sub(upstream_ms).to_string()));
}

/// Answers with the upstream's SSE stream, normalised chunk by chunk as it arrives.
///
/// The upstream is read by a pump that runs under `wait_until`, not by the response body:
/// when a client hangs up, workerd stops pulling the response stream, so only a pump outside
/// it can see the stream to its end, settle its usage and log it. The pump hands chunks over
/// an unbounded channel, so it never waits on a slow or departed client; an answer is a few
/// kilobytes, so the buffer stays small.
fn relay_stream(mut pump: StreamPump, call: &mut Call<'_>) -> Result<Response, ApiError> {
    call.log_deferred = true;
    pump.log = std::mem::take(&mut call.log);
    pump.log.status = 200;
    let (to_client, from_pump) = mpsc::unbounded::<Vec<u8>>();
    call.ctx.wait_until(pump.run(to_client));
    let headers = Headers::new();
    headers.set("content-type", "text/event-stream").map_err(runtime_error)?;
    // no-transform: a compressed event stream would be buffered, not streamed.
    headers.set("cache-control", "no-cache, no-transform").map_err(runtime_error)?;
    let stream = from_pump.map(Ok::<Vec<u8>, worker::Error>);
    Response::from_stream(stream).map(|r| r.with_headers(headers)).map_err(runtime_error)
}

/// Moves a stream from Databricks to the client, one upstream read at a time, then settles it.
struct StreamPump {
    body: ByteStream,
    relay: ChatStreamRelay,
    /// The longest gap allowed between two upstream reads.
    idle_ms: u64,
    controller: Option<AbortController>,
    account: Option<Account>,
    prompt_bytes: u64,
    log: RequestLog,
    started_ms: u64,
}

impl StreamPump {
    #[allow(clippy::too_many_arguments)]
    fn new(
        body: ByteStream,
        controller: AbortController,
        call: &Call<'_>,
        model: &str,
        token: Secret,
        deployment: &Deployment,
        account: Account,
        prompt_bytes: u64,
    ) -> Self {
        StreamPump {
            body,
            relay: ChatStreamRelay::new(model, vec![token]),
            idle_ms: deployment.stream_timeout_ms,
            controller: Some(controller),
            account: Some(account),
            prompt_bytes,
            log: RequestLog::default(),
            started_ms: call.started_ms,
        }
    }

    async fn run(mut self, to_client: mpsc::UnboundedSender<Vec<u8>>) {
        while !self.relay.is_closed() {
            let out = match within(self.idle_ms, self.body.next()).await {
                Some(Some(Ok(bytes))) => self.relay.feed(&bytes),
                Some(Some(Err(e))) => {
                    self.relay.fail(ApiError::bad_gateway(format!("The Databricks stream broke: {e}")))
                }
                Some(None) => self.relay.finish(),
                None => self.relay.fail(ApiError::gateway_timeout(format!(
                    "Databricks sent nothing for {} s (stream_timeout); the stream was cut.",
                    self.idle_ms as f64 / 1000.0
                ))),
            };
            if self.relay.is_closed() {
                // Settle before the last bytes go out: a client that sends its next request
                // on `[DONE]` finds its slot and budget already freed.
                self.end().await;
            }
            if !out.is_empty() && to_client.unbounded_send(out).is_err() {
                // The response stream is gone: nobody reads what Databricks still produces.
                self.log.client_disconnected = Some(true);
                break;
            }
        }
        to_client.close_channel();
        self.end().await;
    }

    /// The stream is over: stop the upstream if it is still going, settle, and log (once).
    async fn end(&mut self) {
        let Some(account) = self.account.take() else { return };
        if let Some(controller) = self.controller.take() {
            controller.abort();
        }
        // Databricks' usage is cumulative: the last one seen is what it produced. A stream cut
        // before any usage is charged by estimate (about four characters a token).
        let (usage, estimated) = match self.relay.usage() {
            Some(usage) => (usage, false),
            None => {
                let prompt_tokens = self.prompt_bytes.div_ceil(4);
                let completion_tokens = self.relay.generated_chars().div_ceil(4);
                (Usage { prompt_tokens, completion_tokens, total_tokens: prompt_tokens + completion_tokens }, true)
            }
        };
        let outcome = Outcome {
            usage: Some(usage),
            estimated,
            status: self.relay.error().map_or(200, |e| e.status),
            response_id: self.relay.id().map(str::to_string),
        };
        let cost = account.cost(&outcome);
        self.log.cost = Some(pricing::format_usd(cost));
        if account.prices().source == pricing::PriceSource::Unknown {
            self.log.price = Some("unknown: charged 0");
        }
        account.settle(outcome).await;

        self.log.total_ms = now_ms().saturating_sub(self.started_ms);
        self.log.set_usage(Some(usage));
        self.log.estimated = estimated.then_some(true);
        self.log.chunks = Some(self.relay.chunks());
        if let Some(error) = self.relay.error() {
            self.log.error_type = Some(error.kind.as_str());
        }
        worker::console_log!("{}", self.log.to_line());
    }
}
