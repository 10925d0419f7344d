//! Embeddings `input` sent as token ids (what LangChain's `OpenAIEmbeddings` sends by default:
//! tiktoken cl100k_base ids) turned back into text, as LiteLLM does for providers that take text
//! only. The decode table is not built into the worker (about 1 MB): the deploy ships it as a
//! static asset that the runtime loads on the first such request (see `tools/cl100k_table.mjs`).

use serde_json::{Map, Value};

use crate::openai::ApiError;

/// The asset's name under the assets directory.
pub const TABLE_FILE: &str = "cl100k_base.tokens";

/// Token id → its bytes. Format (little-endian): `u32` count N, N + 1 `u32` offsets into the
/// bytes that follow; token t is `bytes[offset[t]..offset[t + 1]]`, empty when cl100k has no
/// token t (every real token has at least one byte).
#[derive(Debug)]
pub struct TokenTable {
    raw: Vec<u8>,
    count: usize,
}

impl TokenTable {
    /// Checks the table's framing once, so that `decode` can index without failing.
    pub fn parse(raw: Vec<u8>) -> Result<TokenTable, String> {
        let count = read_u32(&raw, 0).ok_or("the token table is empty")? as usize;
        let data_start =
            count.checked_add(2).and_then(|n| n.checked_mul(4)).ok_or("the token table's count is absurd")?;
        if raw.len() < data_start {
            return Err("the token table is cut short".into());
        }
        let table = TokenTable { raw, count };
        let mut previous = 0;
        for t in 0..=count {
            let offset = table.offset(t);
            if offset < previous || data_start + offset > table.raw.len() {
                return Err(format!("the token table's offset {t} is out of order"));
            }
            previous = offset;
        }
        if data_start + previous != table.raw.len() {
            return Err("the token table has trailing bytes".into());
        }
        Ok(table)
    }

    fn offset(&self, t: usize) -> usize {
        read_u32(&self.raw, 4 + 4 * t).unwrap_or(0) as usize
    }

    fn token(&self, id: u64) -> Option<&[u8]> {
        let t = usize::try_from(id).ok().filter(|t| *t < self.count)?;
        let data_start = 4 * (self.count + 2);
        let (from, to) = (self.offset(t), self.offset(t + 1));
        (to > from).then(|| &self.raw[data_start + from..data_start + to])
    }

    /// The text of a list of token ids (invalid UTF-8 at a cut replaced, as tiktoken does), or
    /// the first id the table does not have.
    pub fn decode(&self, ids: &[u64]) -> Result<String, u64> {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            bytes.extend_from_slice(self.token(id).ok_or(id)?);
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

fn read_u32(raw: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = raw.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// An `input` made of token ids: one list (one input) or a list of lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenInput {
    One(Vec<u64>),
    Many(Vec<Vec<u64>>),
}

impl TokenInput {
    /// The token ids in a body's `input`; `None` when `input` is not made of token ids.
    /// A malformed list of ids is a 400 naming `input`.
    pub fn from_body(body: &Map<String, Value>) -> Result<Option<TokenInput>, ApiError> {
        let Some(Value::Array(items)) = body.get("input") else { return Ok(None) };
        match items.first() {
            Some(Value::Number(_)) => ids_of(items).map(|ids| Some(TokenInput::One(ids))),
            Some(Value::Array(_)) => {
                let lists = items.iter().map(|item| match item {
                    Value::Array(ids) => ids_of(ids),
                    _ => Err(malformed()),
                });
                lists.collect::<Result<Vec<_>, _>>().map(|lists| Some(TokenInput::Many(lists)))
            }
            _ => Ok(None),
        }
    }

    /// The bytes the ids stand for, as the text Databricks takes in place of `input`.
    pub fn decode(&self, table: &TokenTable) -> Result<Value, ApiError> {
        let decode = |ids: &[u64]| {
            table.decode(ids).map(Value::String).map_err(|id| {
                ApiError::invalid_request(
                    format!("`input` contains the token id {id}, which is not a cl100k_base token"),
                    "input",
                )
            })
        };
        match self {
            TokenInput::One(ids) => decode(ids),
            TokenInput::Many(lists) => lists.iter().map(|ids| decode(ids)).collect::<Result<_, _>>().map(Value::Array),
        }
    }
}

fn malformed() -> ApiError {
    ApiError::invalid_request(
        "`input` must be a string, a list of strings, a list of token ids or a list of lists of token ids",
        "input",
    )
}

fn ids_of(items: &[Value]) -> Result<Vec<u64>, ApiError> {
    if items.is_empty() {
        return Err(ApiError::invalid_request("`input` must not contain an empty list of token ids", "input"));
    }
    items.iter().map(|v| v.as_u64().ok_or_else(malformed)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A table in the worker's format from token strings (an empty string: no such token).
    fn table_of(tokens: &[&[u8]]) -> Vec<u8> {
        let mut raw = (tokens.len() as u32).to_le_bytes().to_vec();
        let mut offset = 0u32;
        raw.extend_from_slice(&offset.to_le_bytes());
        for t in tokens {
            offset += t.len() as u32;
            raw.extend_from_slice(&offset.to_le_bytes());
        }
        for t in tokens {
            raw.extend_from_slice(t);
        }
        raw
    }

    fn table() -> TokenTable {
        // "é" is two bytes, split over two tokens as byte-level BPE does.
        TokenTable::parse(table_of(&[b"Hello", b" world", b"", &[0xc3], &[0xa9]])).unwrap()
    }

    #[test]
    fn ids_decode_to_their_text() {
        let t = table();
        assert_eq!(t.decode(&[0, 1]), Ok("Hello world".into()));
        assert_eq!(t.decode(&[0, 3, 4]), Ok("Helloé".into()));
        // A cut multi-byte character is replaced, not an error (as tiktoken's decode).
        assert_eq!(t.decode(&[3]), Ok("\u{fffd}".into()));
        assert_eq!(t.decode(&[2]), Err(2), "a gap in the table");
        assert_eq!(t.decode(&[0, 5]), Err(5));
        assert_eq!(t.decode(&[u64::MAX]), Err(u64::MAX));
    }

    #[test]
    fn a_broken_table_is_refused() {
        let good = table_of(&[b"a", b"bc"]);
        assert!(TokenTable::parse(good.clone()).is_ok());
        assert!(TokenTable::parse(Vec::new()).is_err());
        assert!(TokenTable::parse(good[..good.len() - 1].to_vec()).is_err());
        let mut extra = good.clone();
        extra.push(b'x');
        assert!(TokenTable::parse(extra).is_err());
        let mut huge = good;
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(TokenTable::parse(huge).is_err());
    }

    fn input(v: Value) -> Result<Option<TokenInput>, ApiError> {
        TokenInput::from_body(json!({ "input": v }).as_object().unwrap())
    }

    #[test]
    fn token_inputs_keep_their_shape() {
        let t = table();
        assert_eq!(input(json!([0, 1])).unwrap().unwrap().decode(&t).unwrap(), json!("Hello world"));
        assert_eq!(input(json!([[0], [1, 0]])).unwrap().unwrap().decode(&t).unwrap(), json!(["Hello", " worldHello"]));
        assert_eq!(input(json!("text")).unwrap(), None);
        assert_eq!(input(json!(["a", "b"])).unwrap(), None);
        let e = input(json!([[0], [7]])).unwrap().unwrap().decode(&t).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some("input")));
        assert!(e.message.contains("7"), "{}", e.message);
    }

    #[test]
    fn malformed_token_inputs_are_400_naming_input() {
        for bad in [json!([1, -2]), json!([1, 2.5]), json!([[1], "a"]), json!([[1], []]), json!([1, [2]])] {
            let e = input(bad.clone()).unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some("input")), "{bad}");
        }
    }
}
