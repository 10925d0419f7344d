//! Whom a request is attributed to besides its key: the end user (LiteLLM's customer) and the
//! tags its spend is recorded under. Read from the body before anything is dropped from it.
//!
//! - The end user is OpenAI's `user` (chat, completions, embeddings, Responses), or Anthropic's
//!   `metadata.user_id` (Messages).
//! - Tags are `metadata.tags`, a list of strings (LiteLLM's request tags).

use serde_json::{Map, Value};

use crate::openai::ApiError;

/// An end user's id or a tag longer than this is a mistake (and would bloat every row).
const MAX_TEXT: usize = 256;
const MAX_TAGS: usize = 32;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attribution {
    pub end_user: Option<String>,
    pub tags: Vec<String>,
}

impl Attribution {
    /// Reads the attribution of a request body; a malformed one is the caller's 400.
    pub fn of(body: &Map<String, Value>) -> Result<Self, ApiError> {
        let metadata = match body.get("metadata") {
            None | Some(Value::Null) => None,
            Some(Value::Object(m)) => Some(m),
            // Other shapes are the wire format's business (it validates `metadata` itself).
            Some(_) => None,
        };
        let end_user = match body.get("user") {
            Some(Value::String(u)) => Some(text(u, "user")?),
            None | Some(Value::Null) => match metadata.and_then(|m| m.get("user_id")) {
                Some(Value::String(u)) => Some(text(u, "metadata.user_id")?),
                _ => None,
            },
            Some(_) => return Err(ApiError::invalid_request("Invalid `user`: must be a string", "user")),
        };
        let end_user = end_user.filter(|u| !u.is_empty());
        let tags = match metadata.and_then(|m| m.get("tags")) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                if items.len() > MAX_TAGS {
                    return Err(invalid_tags(&format!("at most {MAX_TAGS} tags")));
                }
                let mut tags: Vec<String> = Vec::with_capacity(items.len());
                for item in items {
                    let Value::String(tag) = item else { return Err(invalid_tags("each tag must be a string")) };
                    let tag = text(tag, "metadata.tags")?;
                    if !tag.is_empty() && !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
                tags
            }
            Some(_) => return Err(invalid_tags("must be a list of strings")),
        };
        Ok(Attribution { end_user, tags })
    }
}

fn text(value: &str, field: &str) -> Result<String, ApiError> {
    if value.chars().count() > MAX_TEXT {
        return Err(ApiError::invalid_request(format!("Invalid `{field}`: at most {MAX_TEXT} characters"), field));
    }
    Ok(value.to_string())
}

fn invalid_tags(why: &str) -> ApiError {
    ApiError::invalid_request(format!("Invalid `metadata.tags`: {why}"), "metadata.tags")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(body: Value) -> Result<Attribution, ApiError> {
        Attribution::of(body.as_object().unwrap())
    }

    #[test]
    fn reads_the_end_user_and_tags() {
        let a = of(json!({"user": "cust-1", "metadata": {"tags": ["prod", "app:x", "prod", ""]}})).unwrap();
        assert_eq!(a.end_user.as_deref(), Some("cust-1"));
        assert_eq!(a.tags, ["prod", "app:x"]);
        let anthropic = of(json!({"metadata": {"user_id": "cust-2"}})).unwrap();
        assert_eq!(anthropic.end_user.as_deref(), Some("cust-2"));
        assert_eq!(of(json!({"user": ""})).unwrap(), Attribution::default());
        assert_eq!(of(json!({})).unwrap(), Attribution::default());
    }

    #[test]
    fn refuses_malformed_attribution() {
        assert_eq!(of(json!({"user": 3})).unwrap_err().param.as_deref(), Some("user"));
        assert_eq!(of(json!({"metadata": {"tags": "prod"}})).unwrap_err().param.as_deref(), Some("metadata.tags"));
        assert_eq!(of(json!({"metadata": {"tags": [1]}})).unwrap_err().status, 400);
        assert!(of(json!({"user": "x".repeat(300)})).is_err());
        assert!(of(json!({"metadata": {"tags": vec!["t"; 40]}})).is_err());
    }
}
