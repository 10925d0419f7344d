//! Who is calling: the key a request presents, and the constant-time check of a master key.
//! Virtual keys (held in Workers KV) will be resolved beside the master key here.

/// The headers a key may arrive in, in the order they are consulted (LiteLLM's set).
pub const KEY_HEADERS: [&str; 4] = ["authorization", "x-litellm-api-key", "api-key", "x-api-key"];

/// The key presented by a request; `header` looks a header up by lower-case name.
/// `Authorization` must use the Bearer scheme; the other headers carry the key bare
/// (a `Bearer ` prefix is tolerated there too, as LiteLLM does).
pub fn presented_key(header: impl Fn(&str) -> Option<String>) -> Option<String> {
    for name in KEY_HEADERS {
        let Some(value) = header(name) else { continue };
        let value = value.trim();
        let key = match value.get(..7) {
            Some(scheme) if scheme.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
            _ if name == "authorization" => continue,
            _ => value,
        };
        if !key.is_empty() {
            return Some(key.to_string());
        }
    }
    None
}

/// Compares two secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_from(headers: &[(&str, &str)]) -> Option<String> {
        presented_key(|name| headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn keys_are_found_in_every_accepted_header() {
        assert_eq!(key_from(&[("authorization", "Bearer sk-1")]).as_deref(), Some("sk-1"));
        assert_eq!(key_from(&[("authorization", "bearer  sk-1 ")]).as_deref(), Some("sk-1"));
        assert_eq!(key_from(&[("x-litellm-api-key", "sk-2")]).as_deref(), Some("sk-2"));
        assert_eq!(key_from(&[("x-litellm-api-key", "Bearer sk-2")]).as_deref(), Some("sk-2"));
        assert_eq!(key_from(&[("api-key", "sk-3")]).as_deref(), Some("sk-3"));
        assert_eq!(key_from(&[("x-api-key", "sk-4")]).as_deref(), Some("sk-4"));
    }

    #[test]
    fn a_non_bearer_authorization_is_not_a_key() {
        assert_eq!(key_from(&[("authorization", "Basic dXNlcjpwYXNz")]), None);
        assert_eq!(key_from(&[("authorization", "Basic x"), ("api-key", "sk-3")]).as_deref(), Some("sk-3"));
        assert_eq!(key_from(&[("authorization", "Bearer ")]), None);
        assert_eq!(key_from(&[]), None);
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"sk-1234", b"sk-1234"));
        assert!(!constant_time_eq(b"sk-1234", b"sk-1235"));
        assert!(!constant_time_eq(b"sk-1234", b"sk-12345"));
        assert!(!constant_time_eq(b"", b"x"));
    }
}
