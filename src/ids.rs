//! Random identifiers, and the lower-case hex they are written in.

const HEX: &[u8; 16] = b"0123456789abcdef";

/// `bytes` as lower-case hex, two digits a byte (what `format!("{b:02x}")` writes for each).
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

/// Random bytes drawn from the platform's source this many at a time: in a worker each draw is
/// a call out of wasm (`crypto.getRandomValues`), and a request draws for its call id and its
/// routing.
const POOL_BYTES: usize = 1024;

std::thread_local! {
    /// Random bytes not handed out yet (the unused tail of the last draw).
    static POOL: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Fills `out` with random bytes from the isolate's pool (refilled from the platform's source
/// when short). Not for secrets (keys draw their own): the pool lives in memory until used.
pub fn random_fill(out: &mut [u8]) -> Result<(), getrandom::Error> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < out.len() {
            let mut fresh = vec![0u8; POOL_BYTES.max(out.len())];
            getrandom::fill(&mut fresh)?;
            *pool = fresh;
        }
        let rest = pool.len() - out.len();
        out.copy_from_slice(&pool[rest..]);
        pool.truncate(rest);
        Ok(())
    })
}

/// A random UUID (version 4), used as the call id of a request.
pub fn uuid_v4() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    random_fill(&mut b)?;
    Ok(format_uuid_v4(b))
}

/// 16 random bytes as a version 4 UUID: `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`.
fn format_uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(36);
    for (i, &x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(char::from(HEX[usize::from(x >> 4)]));
        out.push(char::from(HEX[usize::from(x & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_well_formed_and_distinct() {
        let a = uuid_v4().unwrap();
        let b = uuid_v4().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]));
    }

    #[test]
    fn pooled_draws_never_repeat_bytes() {
        // More than a pool's worth, so that the pool is refilled along the way.
        let ids: Vec<String> = (0..200).map(|_| uuid_v4().unwrap()).collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        let mut big = vec![0u8; 3 * POOL_BYTES];
        random_fill(&mut big).unwrap();
        assert!(big.iter().any(|&b| b != 0));
    }

    #[test]
    fn hex_is_two_lower_case_digits_a_byte() {
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex(&all), expected);
        assert_eq!(hex(&[]), "");
    }

    #[test]
    fn uuids_are_laid_out_as_before() {
        // The former formatting: hex of the bytes, cut 8-4-4-4-12.
        let layout = |mut b: [u8; 16]| {
            b[6] = (b[6] & 0x0f) | 0x40;
            b[8] = (b[8] & 0x3f) | 0x80;
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
        };
        for seed in [[0u8; 16], [0xff; 16], core::array::from_fn(|i| (i * 37 + 11) as u8)] {
            assert_eq!(format_uuid_v4(seed), layout(seed));
        }
        assert_eq!(format_uuid_v4([0xab; 16]), "abababab-abab-4bab-abab-abababababab");
    }
}
