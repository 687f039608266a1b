//! Floats in JSON as orjson writes them, byte for byte, so a line built here reads the same as
//! one Python built with orjson (the access line, accounting.rs): the shortest digits that read
//! back as the value (a tie between two going to the even one), in plain notation from 1e-5 to
//! 1e16 and as `1e+16` / `1e-7` outside it; NaN and the infinities as null.

use std::io::Write as _;

pub fn push_f64(out: &mut Vec<u8>, v: f64) {
    if !v.is_finite() {
        out.extend_from_slice(b"null");
        return;
    }
    // zmij (Schubfach) gives the shortest digits that read back as v, a tie between two going
    // to the even one as orjson's and Python's repr do (Rust's own `{}` goes up); its notation
    // is normalised here to orjson's.
    let mut buffer = zmij::Buffer::new();
    let text = buffer.format_finite(v);
    let plain = (1e-5..1e16).contains(&v.abs());
    let bytes = text.as_bytes();
    // One pass for both questions (an exponent, a point): each float of a ledger record and
    // an access line asks them.
    let (mut exponent, mut point) = (false, false);
    for &b in bytes {
        exponent |= b | 0x20 == b'e';
        point |= b == b'.';
    }
    if plain && !exponent {
        // Already orjson's notation but perhaps for a missing ".0".
        out.extend_from_slice(bytes);
        if !point {
            out.extend_from_slice(b".0");
        }
        return;
    }
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = match text.split_once(['e', 'E']) {
        Some((m, e)) => (m, e.trim_start_matches('+').parse::<i32>().unwrap_or(0)),
        None => (text, 0),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    // v = 0.DIGITS x 10^point; at most 17 significant digits, kept on the stack.
    let mut point = whole.len() as i32 + exp;
    let mut buf = [0u8; 40];
    let mut n = 0;
    for d in whole.bytes().chain(fraction.bytes()) {
        if n == 0 && d == b'0' {
            point -= 1;
            continue;
        }
        if let Some(slot) = buf.get_mut(n) {
            *slot = d;
            n += 1;
        }
    }
    while n > 0 && buf.get(n - 1) == Some(&b'0') {
        n -= 1;
    }
    let digits = buf.get(..n).unwrap_or_default();
    if negative {
        out.push(b'-');
    }
    if digits.is_empty() {
        out.extend_from_slice(b"0.0");
        return;
    }
    let n = n as i32;
    if plain {
        if point <= 0 {
            out.extend_from_slice(b"0.");
            out.extend(std::iter::repeat_n(b'0', (-point) as usize));
            out.extend_from_slice(digits);
        } else if point >= n {
            out.extend_from_slice(digits);
            out.extend(std::iter::repeat_n(b'0', (point - n) as usize));
            out.extend_from_slice(b".0");
        } else {
            let (a, b) = digits.split_at(point as usize);
            out.extend_from_slice(a);
            out.push(b'.');
            out.extend_from_slice(b);
        }
        return;
    }
    let (first, rest) = digits.split_at(1);
    out.extend_from_slice(first);
    if !rest.is_empty() {
        out.push(b'.');
        out.extend_from_slice(rest);
    }
    let e = point - 1;
    let _ = write!(out, "e{}{e}", if e >= 0 { "+" } else { "" });
}

/// `q / 10^decimals` for an integer-valued `q` (a number rounded to 1/scale, accounting.rs), as
/// `push_f64` writes that quotient, without formatting a float: below 10^15 the quotient is a
/// decimal of at most 15 significant digits, which is its own shortest round-trip form (two
/// such decimals are never the same double), so the digits of q with the point put in and the
/// trailing zeros dropped are what orjson writes. Falls back to `push_f64` outside that.
pub fn push_scaled(out: &mut Vec<u8>, q: f64, decimals: u32) {
    // Up to 5 decimals: the least quotient above 0 is then 1e-5, still plain notation.
    const POW10: [u64; 6] = [1, 10, 100, 1_000, 10_000, 100_000];
    let Some(&unit) = POW10.get(decimals as usize) else {
        push_f64(out, q / 10f64.powi(decimals as i32));
        return;
    };
    if !(0.0..1e15).contains(&q) || q.fract() != 0.0 {
        push_f64(out, q / unit as f64);
        return;
    }
    let q = q as u64;
    crate::translate::json_out::push_u64(out, q / unit);
    out.push(b'.');
    let mut frac = q % unit;
    if frac == 0 {
        out.push(b'0');
        return;
    }
    let mut width = decimals;
    while frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    let mut digits = [b'0'; 5];
    for slot in digits[..width as usize].iter_mut().rev() {
        *slot = b'0' + (frac % 10) as u8;
        frac /= 10;
    }
    out.extend_from_slice(&digits[..width as usize]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scaled_integer_reads_as_the_quotient_does() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for decimals in 0..=6u32 {
            let unit = 10f64.powi(decimals as i32);
            let mut qs: Vec<f64> = vec![
                0.0,
                1.0,
                9.0,
                10.0,
                100.0,
                1e15 - 1.0,
                1e15,
                2e15,
                123_450.0,
            ];
            qs.extend((0..3000).map(|_| (next() % 10u64.pow(1 + (next() % 15) as u32)) as f64));
            for q in qs {
                let mut fast = Vec::new();
                push_scaled(&mut fast, q, decimals);
                assert_eq!(
                    String::from_utf8_lossy(&fast),
                    f(q / unit),
                    "{q} / 10^{decimals}"
                );
            }
        }
    }

    fn f(v: f64) -> String {
        let mut out = Vec::new();
        push_f64(&mut out, v);
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn floats_in_orjson_notation() {
        assert_eq!(f(1_796_136_862.177), "1796136862.177");
        assert_eq!(f(1.0), "1.0");
        assert_eq!(f(-0.0), "-0.0");
        assert_eq!(f(0.0), "0.0");
        assert_eq!(f(0.000_01), "0.00001");
        assert_eq!(f(1e-6), "1e-6");
        assert_eq!(f(-2.5e-7), "-2.5e-7");
        assert_eq!(f(9_999_999_999_999_998.0), "9999999999999998.0");
        assert_eq!(f(2_197_719_311_704_352.0 + 0.25), "2197719311704352.2"); // a tie: to even
        assert_eq!(f(1e16), "1e+16");
        assert_eq!(f(1.234_567_890_123_456_8e17), "1.2345678901234568e+17");
        assert_eq!(f(1.5e300), "1.5e+300");
        assert_eq!(f(5e-324), "5e-324");
        assert_eq!(f(f64::NAN), "null");
        assert_eq!(f(f64::INFINITY), "null");
    }
}
