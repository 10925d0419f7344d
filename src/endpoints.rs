//! The route table: which path is which endpoint, and the one method it takes.

use crate::parties::{PartyKind, PartyOp};

/// Every endpoint the gateway serves. OpenAI routes answer with and without `/v1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    /// OpenAI's Responses API (what Codex CLI speaks).
    Responses,
    Models,
    Model(String),
    Liveliness,
    Readiness,
    KeyGenerate,
    KeyInfo,
    KeyUpdate,
    KeyDelete,
    KeyList,
    /// `/key/regenerate` (key in the body) or `/key/{key}/regenerate`.
    KeyRegenerate(Option<String>),
    KeyBlock,
    KeyUnblock,
    SpendLogs,
    /// The spend reports (`runtime::reports`) and Prometheus metrics.
    GlobalSpendReport,
    GlobalSpendKeys,
    GlobalSpendModels,
    SpendTags,
    Metrics,
    Health,
    ModelInfo,
    /// `/model_group/info`: each model group the caller may use (LiteLLM's shape).
    ModelGroupInfo,
    /// Anthropic's Messages API, at `/v1/messages` and `/anthropic/v1/messages` (LiteLLM's two).
    Messages,
    MessagesCountTokens,
    /// `/team/*`, `/user/*`, `/customer/*` (and LiteLLM's `/end_user/*`).
    Party(PartyKind, PartyOp),
}

impl Endpoint {
    pub fn parse(path: &str) -> Option<Endpoint> {
        let route = match path {
            "/chat/completions" | "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/completions" | "/v1/completions" => Endpoint::Completions,
            "/embeddings" | "/v1/embeddings" => Endpoint::Embeddings,
            "/responses" | "/v1/responses" => Endpoint::Responses,
            "/models" | "/v1/models" => Endpoint::Models,
            "/health/liveliness" | "/health/liveness" => Endpoint::Liveliness,
            "/health/readiness" => Endpoint::Readiness,
            "/key/generate" => Endpoint::KeyGenerate,
            "/key/info" => Endpoint::KeyInfo,
            "/key/update" => Endpoint::KeyUpdate,
            "/key/delete" => Endpoint::KeyDelete,
            "/key/list" => Endpoint::KeyList,
            "/key/regenerate" => Endpoint::KeyRegenerate(None),
            "/key/block" => Endpoint::KeyBlock,
            "/key/unblock" => Endpoint::KeyUnblock,
            "/spend/logs" => Endpoint::SpendLogs,
            "/global/spend/report" => Endpoint::GlobalSpendReport,
            "/global/spend/keys" => Endpoint::GlobalSpendKeys,
            "/global/spend/models" => Endpoint::GlobalSpendModels,
            "/spend/tags" => Endpoint::SpendTags,
            "/metrics" => Endpoint::Metrics,
            "/health" => Endpoint::Health,
            "/model/info" | "/v1/model/info" => Endpoint::ModelInfo,
            "/model_group/info" | "/v1/model_group/info" => Endpoint::ModelGroupInfo,
            "/v1/messages" | "/anthropic/v1/messages" => Endpoint::Messages,
            "/v1/messages/count_tokens" | "/anthropic/v1/messages/count_tokens" => Endpoint::MessagesCountTokens,
            _ => {
                if let Some(route) = party_route(path) {
                    return Some(route);
                }
                if let Some(id) = path.strip_prefix("/v1/models/").or_else(|| path.strip_prefix("/models/")) {
                    return percent_decode(id).filter(|id| !id.is_empty()).map(Endpoint::Model);
                }
                let key = path.strip_prefix("/key/")?.strip_suffix("/regenerate")?;
                return percent_decode(key)
                    .filter(|k| !k.is_empty() && !k.contains('/'))
                    .map(|k| Endpoint::KeyRegenerate(Some(k)));
            }
        };
        Some(route)
    }

    /// The route speaks Anthropic's API, errors included.
    pub fn is_anthropic(&self) -> bool {
        matches!(self, Endpoint::Messages | Endpoint::MessagesCountTokens)
    }

    /// The one method the route answers; any other gets 405.
    pub fn method(&self) -> &'static str {
        match self {
            Endpoint::Models
            | Endpoint::Model(_)
            | Endpoint::Liveliness
            | Endpoint::Readiness
            | Endpoint::KeyInfo
            | Endpoint::KeyList
            | Endpoint::SpendLogs
            | Endpoint::GlobalSpendReport
            | Endpoint::GlobalSpendKeys
            | Endpoint::GlobalSpendModels
            | Endpoint::SpendTags
            | Endpoint::Metrics
            | Endpoint::Health
            | Endpoint::ModelInfo
            | Endpoint::ModelGroupInfo
            | Endpoint::Party(_, PartyOp::Info | PartyOp::List) => "GET",
            _ => "POST",
        }
    }
}

/// `/team/new`, `/user/info`, `/customer/block`, ...: the operations each kind has.
fn party_route(path: &str) -> Option<Endpoint> {
    let (kind, op) = path.strip_prefix('/')?.split_once('/')?;
    let kind = match kind {
        "team" => PartyKind::Team,
        "user" => PartyKind::User,
        "customer" | "end_user" => PartyKind::Customer,
        _ => return None,
    };
    let op = match op {
        "new" => PartyOp::New,
        "update" => PartyOp::Update,
        "delete" => PartyOp::Delete,
        "info" => PartyOp::Info,
        "list" => PartyOp::List,
        "block" if kind != PartyKind::User => PartyOp::Block,
        "unblock" if kind != PartyKind::User => PartyOp::Unblock,
        "member_add" if kind == PartyKind::Team => PartyOp::MemberAdd,
        "member_delete" if kind == PartyKind::Team => PartyOp::MemberDelete,
        _ => return None,
    };
    Some(Endpoint::Party(kind, op))
}

/// The path as the log line shows it: never with a key in it. The key of
/// `/key/{key}/regenerate` is replaced by `{key}`, and so is any other segment that reads as
/// a key (`sk-...`, escaped or not) in a path someone mistyped.
pub fn loggable_path(path: &str) -> String {
    if let Some(Endpoint::KeyRegenerate(Some(_))) = Endpoint::parse(path) {
        return "/key/{key}/regenerate".to_string();
    }
    let looks_like_key = |segment: &str| {
        let decoded = percent_decode(segment).unwrap_or_else(|| segment.to_string());
        decoded.trim_start().to_ascii_lowercase().starts_with(crate::keys::KEY_PREFIX)
    };
    path.split('/').map(|segment| if looks_like_key(segment) { "{key}" } else { segment }).collect::<Vec<_>>().join("/")
}

/// Decodes `%XX` escapes; `None` for a malformed escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The path of a request's URL, as the runtime serialises it (`https://host[:port]/path?query`):
/// the first `/` after the host begins it, and a `?` or `#` in it is always percent-encoded.
/// What worker's `Request::path()` gives, without converting the request (which parses `cf`).
pub fn url_path(url: &str) -> &str {
    let Some(host_start) = url.find("://").map(|i| i + 3) else { return url };
    let Some(start) = url[host_start..].find('/').map(|i| host_start + i) else { return "/" };
    let path = &url[start..];
    &path[..path.find(['?', '#']).unwrap_or(path.len())]
}

/// The first value of query parameter `name` in a URL (form encoding: `+` is a space).
/// Parsed here rather than with the `url` crate, whose IDNA tables would double the wasm.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split_once('#').map_or(query, |(q, _)| q);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode(&s.replace('+', " "));
        (decode(k)? == name).then(|| decode(v)).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_routes_answer_with_and_without_v1() {
        assert_eq!(Endpoint::parse("/v1/chat/completions"), Some(Endpoint::ChatCompletions));
        assert_eq!(Endpoint::parse("/chat/completions"), Some(Endpoint::ChatCompletions));
        assert_eq!(Endpoint::parse("/models"), Some(Endpoint::Models));
        assert_eq!(
            Endpoint::parse("/v1/responses").map(|r| (r.clone(), r.method())),
            Some((Endpoint::Responses, "POST"))
        );
        assert_eq!(Endpoint::parse("/responses"), Some(Endpoint::Responses));
        assert_eq!(Endpoint::parse("/v1/models/databricks%2Fx"), Some(Endpoint::Model("databricks/x".into())));
        assert_eq!(Endpoint::parse("/v1/models/"), None);
        assert_eq!(Endpoint::parse("/v1/chat/completions/extra"), None);
        assert_eq!(Endpoint::parse("/"), None);
    }

    #[test]
    fn anthropic_routes() {
        for path in ["/v1/messages", "/anthropic/v1/messages"] {
            assert_eq!(Endpoint::parse(path), Some(Endpoint::Messages));
            let count = Endpoint::parse(&format!("{path}/count_tokens")).unwrap();
            assert_eq!((count.method(), count.is_anthropic()), ("POST", true));
        }
        assert!(!Endpoint::ChatCompletions.is_anthropic());
    }

    #[test]
    fn key_routes_and_methods() {
        assert_eq!(Endpoint::parse("/key/generate").map(|r| r.method()), Some("POST"));
        assert_eq!(Endpoint::parse("/key/info").map(|r| r.method()), Some("GET"));
        assert_eq!(Endpoint::parse("/key/list").map(|r| r.method()), Some("GET"));
        assert_eq!(Endpoint::parse("/spend/logs").map(|r| r.method()), Some("GET"));
        for path in ["/global/spend/report", "/global/spend/keys", "/global/spend/models", "/spend/tags", "/metrics"] {
            assert_eq!(Endpoint::parse(path).map(|r| r.method()), Some("GET"), "{path}");
        }
        assert_eq!(Endpoint::parse("/key/sk-abc/regenerate"), Some(Endpoint::KeyRegenerate(Some("sk-abc".into()))));
        assert_eq!(Endpoint::parse("/key/regenerate"), Some(Endpoint::KeyRegenerate(None)));
        assert_eq!(Endpoint::parse("/key/a/b/regenerate"), None);
        assert_eq!(Endpoint::parse("/key/%zz/regenerate"), None);
        assert_eq!(Endpoint::parse("/key/nothing"), None);
    }

    #[test]
    fn logged_paths_never_hold_a_key() {
        assert_eq!(loggable_path("/key/sk-secret-123/regenerate"), "/key/{key}/regenerate");
        let hash = "a".repeat(64);
        assert_eq!(loggable_path(&format!("/key/{hash}/regenerate")), "/key/{key}/regenerate");
        assert_eq!(loggable_path("/key/sk%2Dsecret/regenerate"), "/key/{key}/regenerate");
        assert_eq!(loggable_path("/key/regenerate"), "/key/regenerate");
        assert_eq!(loggable_path("/v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(loggable_path("/v1/models/databricks-gpt-5-1"), "/v1/models/databricks-gpt-5-1");
        // Unknown routes: a key pasted into the URL is dropped too.
        assert_eq!(loggable_path("/sk-pasted-key/v1/chat/completions"), "/{key}/v1/chat/completions");
        assert_eq!(loggable_path("/key/sk-a/b/regenerate"), "/key/{key}/b/regenerate");
        assert_eq!(loggable_path("/v1/%73k-escaped"), "/v1/{key}");
        assert_eq!(loggable_path("/v1/SK-upper"), "/v1/{key}");
    }

    #[test]
    fn url_paths() {
        for (url, path) in [
            ("https://example.com/", "/"),
            ("https://example.com", "/"),
            ("http://127.0.0.1:8787/v1/chat/completions", "/v1/chat/completions"),
            ("https://example.com/foo?a=1&b=/x", "/foo"),
            ("https://example.com/foo#/frag?x", "/foo"),
            ("https://example.com/a%3F%23%2Fb?c", "/a%3F%23%2Fb"),
        ] {
            assert_eq!(url_path(url), path, "{url}");
        }
    }

    #[test]
    fn query_parameters() {
        let url = "https://gw/key/list?page=2&key_alias=team+a%2Fb&empty=&flag#frag";
        assert_eq!(query_param(url, "page").as_deref(), Some("2"));
        assert_eq!(query_param(url, "key_alias").as_deref(), Some("team a/b"));
        assert_eq!(query_param(url, "empty").as_deref(), Some(""));
        assert_eq!(query_param(url, "flag").as_deref(), Some(""));
        assert_eq!(query_param(url, "size"), None);
        assert_eq!(query_param("https://gw/key/info", "key"), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("%e2%9c%93").as_deref(), Some("✓"));
        assert_eq!(percent_decode("%2"), None);
        assert_eq!(percent_decode("%ff"), None);
    }
}
