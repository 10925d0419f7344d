//! Base64, in the two alphabets the gateway writes: standard (OpenAI's base64 embeddings) and
//! URL-safe without padding (new keys, HTTP Basic credentials use the standard one).

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Standard base64 with `=` padding.
pub fn standard(bytes: &[u8]) -> String {
    let mut out = encode(bytes, STANDARD);
    while !out.len().is_multiple_of(4) {
        out.push('=');
    }
    out
}

/// URL-safe base64 without padding.
pub fn url_safe(bytes: &[u8]) -> String {
    encode(bytes, URL_SAFE)
}

fn encode(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_vectors() {
        assert_eq!(super::standard(b""), "");
        assert_eq!(super::standard(b"f"), "Zg==");
        assert_eq!(super::standard(b"fo"), "Zm8=");
        assert_eq!(super::standard(b"foo"), "Zm9v");
        assert_eq!(super::standard(b"\xfb\xff\xfe"), "+//+");
        assert_eq!(super::url_safe(b"\xfb\xff\xfe"), "-__-");
        assert_eq!(super::url_safe(b"fo"), "Zm8");
    }
}
