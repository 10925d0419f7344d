//! A request body read chunk by chunk within Databricks' payload limit. A body sent without
//! `Content-Length` (chunked) has no size to check up front: it is counted as it arrives and
//! refused at the first chunk past the limit, so an endless upload costs at most the limit.

use crate::openai::{ApiError, ErrorKind, MAX_BODY_BYTES};

/// The bytes of a body received so far, never more than `limit`.
#[derive(Debug)]
pub struct BoundedBody {
    bytes: Vec<u8>,
    limit: usize,
}

impl Default for BoundedBody {
    fn default() -> Self {
        BoundedBody::new(MAX_BODY_BYTES)
    }
}

impl BoundedBody {
    pub fn new(limit: usize) -> Self {
        BoundedBody { bytes: Vec::new(), limit }
    }

    /// Keeps a chunk, or refuses it (413) when it would take the body past the limit.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), ApiError> {
        if chunk.len() > self.limit - self.bytes.len() {
            return Err(too_large_unannounced(self.limit));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

/// The 413 for a body whose full length is not known (it was not read to its end).
pub fn too_large_unannounced(limit: usize) -> ApiError {
    ApiError::new(
        413,
        ErrorKind::InvalidRequest,
        format!("Request body is over {limit} bytes, the limit (Databricks' payload limit)"),
    )
    .with_param("request_body")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_up_to_the_limit_are_kept() {
        let mut body = BoundedBody::new(10);
        body.push(b"hello").unwrap();
        body.push(b"").unwrap();
        body.push(b"world").unwrap();
        assert_eq!(body.into_bytes(), b"helloworld");
    }

    #[test]
    fn the_chunk_past_the_limit_is_refused_with_a_413() {
        let mut body = BoundedBody::new(10);
        body.push(b"hello").unwrap();
        let e = body.push(b"world!").unwrap_err();
        assert_eq!((e.status, e.kind, e.param.as_deref()), (413, ErrorKind::InvalidRequest, Some("request_body")));
        assert!(e.message.contains("10 bytes"));
        // Nothing of the refused chunk was kept.
        assert_eq!(body.into_bytes(), b"hello");
    }

    #[test]
    fn the_default_limit_is_databricks_payload_limit() {
        let mut body = BoundedBody::default();
        body.push(&vec![b'x'; MAX_BODY_BYTES]).unwrap();
        assert_eq!(body.push(b"x").unwrap_err().status, 413);
    }
}
