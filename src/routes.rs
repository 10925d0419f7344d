//! The route table: which path is which endpoint, and the one method it takes.

/// Every endpoint the gateway serves. OpenAI routes answer with and without `/v1`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    ChatCompletions,
    Completions,
    Embeddings,
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
    Health,
    ModelInfo,
}

impl Route {
    pub fn parse(path: &str) -> Option<Route> {
        let route = match path {
            "/chat/completions" | "/v1/chat/completions" => Route::ChatCompletions,
            "/completions" | "/v1/completions" => Route::Completions,
            "/embeddings" | "/v1/embeddings" => Route::Embeddings,
            "/models" | "/v1/models" => Route::Models,
            "/health/liveliness" | "/health/liveness" => Route::Liveliness,
            "/health/readiness" => Route::Readiness,
            "/key/generate" => Route::KeyGenerate,
            "/key/info" => Route::KeyInfo,
            "/key/update" => Route::KeyUpdate,
            "/key/delete" => Route::KeyDelete,
            "/key/list" => Route::KeyList,
            "/key/regenerate" => Route::KeyRegenerate(None),
            "/key/block" => Route::KeyBlock,
            "/key/unblock" => Route::KeyUnblock,
            "/spend/logs" => Route::SpendLogs,
            "/health" => Route::Health,
            "/model/info" | "/v1/model/info" => Route::ModelInfo,
            _ => {
                if let Some(id) = path.strip_prefix("/v1/models/").or_else(|| path.strip_prefix("/models/")) {
                    return percent_decode(id).filter(|id| !id.is_empty()).map(Route::Model);
                }
                let key = path.strip_prefix("/key/")?.strip_suffix("/regenerate")?;
                return percent_decode(key)
                    .filter(|k| !k.is_empty() && !k.contains('/'))
                    .map(|k| Route::KeyRegenerate(Some(k)));
            }
        };
        Some(route)
    }

    /// The one method the route answers; any other gets 405.
    pub fn method(&self) -> &'static str {
        match self {
            Route::Models
            | Route::Model(_)
            | Route::Liveliness
            | Route::Readiness
            | Route::KeyInfo
            | Route::KeyList
            | Route::SpendLogs
            | Route::Health
            | Route::ModelInfo => "GET",
            _ => "POST",
        }
    }
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
        assert_eq!(Route::parse("/v1/chat/completions"), Some(Route::ChatCompletions));
        assert_eq!(Route::parse("/chat/completions"), Some(Route::ChatCompletions));
        assert_eq!(Route::parse("/models"), Some(Route::Models));
        assert_eq!(Route::parse("/v1/models/databricks%2Fx"), Some(Route::Model("databricks/x".into())));
        assert_eq!(Route::parse("/v1/models/"), None);
        assert_eq!(Route::parse("/v1/chat/completions/extra"), None);
        assert_eq!(Route::parse("/"), None);
    }

    #[test]
    fn key_routes_and_methods() {
        assert_eq!(Route::parse("/key/generate").map(|r| r.method()), Some("POST"));
        assert_eq!(Route::parse("/key/info").map(|r| r.method()), Some("GET"));
        assert_eq!(Route::parse("/key/list").map(|r| r.method()), Some("GET"));
        assert_eq!(Route::parse("/spend/logs").map(|r| r.method()), Some("GET"));
        assert_eq!(Route::parse("/key/sk-abc/regenerate"), Some(Route::KeyRegenerate(Some("sk-abc".into()))));
        assert_eq!(Route::parse("/key/regenerate"), Some(Route::KeyRegenerate(None)));
        assert_eq!(Route::parse("/key/a/b/regenerate"), None);
        assert_eq!(Route::parse("/key/%zz/regenerate"), None);
        assert_eq!(Route::parse("/key/nothing"), None);
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
