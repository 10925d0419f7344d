//! The chat completions handler: the order of one proxied request, step by step.

use futures_channel::mpsc;
use futures_util::StreamExt;
use worker::{AbortController, ByteStream, Headers, Request, Response};

use super::upstream::{self, within, Upstream};
use super::{bytes_response, now_ms, read_body, runtime_error, unknown_model, vars, Call, Caller};
use crate::databricks;
use crate::embedded;
use crate::log::RequestLog;
use crate::openai::{self, ApiError, ChatRequest};
use crate::secret::Secret;
use crate::stream::ChatStreamRelay;

/// `POST /chat/completions` for an authenticated caller: parse → resolve the model (the key's
/// aliases and allowed models) → forward → relay.
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
    call.headers.push(("x-litellm-model-group", group));
    call.headers.push(("x-litellm-model-id", deployment.id.clone()));

    let api_base = vars::resolve(call.env, &deployment.api_base)?;
    let token = vars::resolve(call.env, &deployment.api_key)?;
    call.headers.push(("x-litellm-model-api-base", api_base.expose().to_string()));
    databricks::prepare_chat_body(&mut body, &deployment.endpoint, stream);
    let payload =
        serde_json::to_vec(&body).map_err(|e| ApiError::internal(format!("cannot encode the request: {e}")))?;
    drop(body);

    let url = databricks::url(api_base.expose(), "chat/completions");
    let upstream_started = now_ms();
    let Upstream { mut response, controller } =
        upstream::post_json(&url, &token, payload, deployment.timeout_ms).await.inspect_err(|_| {
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
        return relay_stream(body, controller, call, &model, token, deployment.stream_timeout_ms);
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
    let (answer, usage) = databricks::normalize_chat_completion(&body, &model)?;
    call.log.set_usage(usage);
    bytes_response(200, answer)
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
/// when a client hangs up, workerd stops pulling (and never drops) the response stream, so
/// only a pump outside it can still see the stream to its end, account for it and log it.
/// The pump hands chunks over an unbounded channel, so it never waits on a slow or departed
/// client; an answer is a few kilobytes, so the buffer stays small.
fn relay_stream(
    body: ByteStream,
    controller: AbortController,
    call: &mut Call<'_>,
    model: &str,
    token: Secret,
    idle_ms: u64,
) -> Result<Response, ApiError> {
    call.log_deferred = true;
    let mut log = std::mem::take(&mut call.log);
    log.status = 200;
    let (to_client, from_pump) = mpsc::unbounded::<Vec<u8>>();
    let pump = StreamPump {
        body,
        relay: ChatStreamRelay::new(model, vec![token]),
        idle_ms,
        controller: Some(controller),
        to_client,
        log,
        started_ms: call.started_ms,
    };
    call.ctx.wait_until(pump.run());
    let headers = Headers::new();
    headers.set("content-type", "text/event-stream").map_err(runtime_error)?;
    // no-transform: a compressed event stream would be buffered, not streamed.
    headers.set("cache-control", "no-cache, no-transform").map_err(runtime_error)?;
    let stream = from_pump.map(Ok::<Vec<u8>, worker::Error>);
    Response::from_stream(stream).map(|r| r.with_headers(headers)).map_err(runtime_error)
}

/// Moves a stream from Databricks to the client, one upstream read at a time.
struct StreamPump {
    body: ByteStream,
    relay: ChatStreamRelay,
    /// The longest gap allowed between two upstream reads.
    idle_ms: u64,
    controller: Option<AbortController>,
    to_client: mpsc::UnboundedSender<Vec<u8>>,
    log: RequestLog,
    started_ms: u64,
}

impl StreamPump {
    async fn run(mut self) {
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
            if !out.is_empty() && self.to_client.unbounded_send(out).is_err() {
                // The response stream is gone: nobody reads what Databricks still produces.
                self.log.client_disconnected = Some(true);
                break;
            }
        }
        self.to_client.close_channel();
        self.end();
    }

    /// The stream is over: stop the upstream if it is still going, and log the call.
    fn end(&mut self) {
        if let Some(controller) = self.controller.take() {
            controller.abort();
        }
        self.log.total_ms = now_ms().saturating_sub(self.started_ms);
        self.log.set_usage(self.relay.usage());
        self.log.chunks = Some(self.relay.chunks());
        if let Some(error) = self.relay.error() {
            self.log.error_type = Some(error.kind.as_str());
        }
        worker::console_log!("{}", self.log.to_line());
    }
}
