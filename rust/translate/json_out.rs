//! Writing JSON text and SSE frames straight into an output buffer, without building values.

use serde_json::Value;

/// For each byte, what it is written as inside a JSON string: 0 as itself, `u` as `\u00XX`,
/// else the letter after the backslash.
const ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Whether any of the 8 bytes of `w` is a control character, `"` or `\\`.
fn any_to_escape(w: u64) -> bool {
    escape_mask(w) != 0
}

/// The high bit of each of the 8 bytes of `w` (little-endian) that is a control character, `"`
/// or `\\`, and perhaps of bytes after the first such one: the bit tricks are exact for "any"
/// and for the lowest one (a borrow only runs upwards).
pub(crate) fn escape_mask(w: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (control | quote | backslash) & HIGH
}

/// Whether no byte of `bytes` needs escaping, eight at a time: the words that fit, then the last
/// eight bytes (overlapping the words before), or for a string of fewer than eight its bytes
/// padded with spaces.
fn nothing_to_escape(bytes: &[u8]) -> bool {
    // Fixed-size loads (no call to copy a chunk): eight bytes at a time, the last eight
    // overlapping the words before them.
    let word = |chunk: &[u8]| {
        <[u8; 8]>::try_from(chunk).is_ok_and(|w| !any_to_escape(u64::from_le_bytes(w)))
    };
    if bytes.len() < 8 {
        let mut w = [b' '; 8];
        for (slot, &b) in w.iter_mut().zip(bytes) {
            *slot = b;
        }
        return !any_to_escape(u64::from_le_bytes(w));
    }
    bytes.chunks_exact(8).all(word) && word(&bytes[bytes.len() - 8..])
}

/// Appends `s` as a JSON string literal (quotes included), escaped as serde_json escapes (and
/// orjson: the access line, accounting.rs). Eight bytes at a time while none needs escaping;
/// most strings (ids, names, models) need none and are copied whole.
pub(crate) fn push_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    let bytes = s.as_bytes();
    if nothing_to_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if let Some(chunk) = bytes.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            // On to the first byte to escape (past all eight when none is).
            let first = escape_mask(u64::from_le_bytes(word)).trailing_zeros() / 8;
            i += first as usize;
            if first == 8 {
                continue;
            }
        }
        let b = bytes[i];
        let esc = ESCAPE[usize::from(b)];
        if esc != 0 {
            out.extend_from_slice(&bytes[start..i]);
            if esc == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            } else {
                out.push(b'\\');
                out.push(esc);
            }
            start = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends an optional string as a JSON string or `null`.
pub(crate) fn push_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => push_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// Appends a non-negative integer in decimal.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    // Two digits a division, from a table of "00".."99": the ledger's and the access line's
    // numbers are written on every request.
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    if n < 10 {
        out.push(b'0' + n as u8);
        return;
    }
    // The digits left-aligned in a fixed-size block (`push_block`).
    let digits = n.ilog10() as usize + 1;
    let mut buf = [0u8; 20];
    let mut i = digits;
    while n >= 100 {
        let pair = (n % 100) as usize * 2;
        n /= 100;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if n >= 10 {
        let pair = n as usize * 2;
        i -= 2;
        buf[i..i + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        i -= 1;
        buf[i] = b'0' + n as u8;
    }
    push_block(out, &buf, digits);
}

/// The first `len` bytes of `block`: the whole block copied and the copy cut, a few moves where
/// a slice of any length is a call to memcpy (the access line's keys and values, integers).
#[inline]
pub(crate) fn push_block<const N: usize>(out: &mut Vec<u8>, block: &[u8; N], len: usize) {
    let at = out.len();
    out.extend_from_slice(block);
    out.truncate(at + len.min(N));
}

/// Appends a JSON value. Serializing a `Value` into a `Vec` cannot fail.
pub(crate) fn push_value(out: &mut Vec<u8>, v: &Value) {
    if serde_json::to_writer(&mut *out, v).is_err() {
        out.extend_from_slice(b"null");
    }
}

/// A `Value` as JSON bytes.
pub(crate) fn to_bytes(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    push_value(&mut out, v);
    out
}

/// Starts an Anthropic-style SSE frame (`event: NAME\ndata: `); end it with [`end_frame`].
pub(crate) fn begin_event(out: &mut Vec<u8>, name: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
}

/// Ends an SSE frame.
pub(crate) fn end_frame(out: &mut Vec<u8>) {
    out.extend_from_slice(b"\n\n");
}

/// One whole Anthropic-style SSE frame carrying a JSON value.
pub(crate) fn event_value(out: &mut Vec<u8>, name: &str, v: &Value) {
    begin_event(out, name);
    push_value(out, v);
    end_frame(out);
}

/// Seconds since the Unix epoch, for OpenAI's `created`.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn escapes_like_serde_json() {
        for s in [
            "plain",
            "quote \" and \\ backslash",
            "nl\ncr\rtab\t",
            "\u{0}\u{1}\u{1f}\u{8}\u{c}",
            "ünïcødé ✓ 🎉",
            "",
        ] {
            let mut out = Vec::new();
            push_str(&mut out, s);
            assert_eq!(out, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        // Every escaped byte at every position of strings around the 8-byte chunks.
        for len in 0..20 {
            for at in 0..len {
                for special in ['"', '\\', '\n', '\u{1}', '\u{1f}', ' ', '~', '\u{7f}', 'é'] {
                    let s: String = (0..len)
                        .map(|i| if i == at { special } else { 'a' })
                        .collect();
                    let mut out = Vec::new();
                    push_str(&mut out, &s);
                    assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
                }
            }
        }
        // Two to escape in one word (the first found, then the scan goes on from it).
        for len in 2..18 {
            for a in 0..len {
                for b in a + 1..len {
                    let s: String = (0..len)
                        .map(|i| match i {
                            _ if i == a => '"',
                            _ if i == b => '\n',
                            _ => 'x',
                        })
                        .collect();
                    let mut out = Vec::new();
                    push_str(&mut out, &s);
                    assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn writes_numbers() {
        // Every length and both parities of digit count, the edges of each power of ten, and a
        // spread of values in between.
        let mut cases = vec![
            0u64,
            7,
            10,
            99,
            100,
            101,
            1234567890,
            u64::MAX,
            u64::MAX - 1,
        ];
        let mut p = 1u64;
        while let Some(next) = p.checked_mul(10) {
            cases.extend([p - 1, p, p + 1, next - 1]);
            p = next;
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            cases.push(x >> (x % 64));
        }
        for n in cases {
            let mut out = Vec::new();
            push_u64(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes(), "{n}");
        }
    }
}
