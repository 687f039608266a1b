//! A record's values written once as JSON, comma-separated, with where each one ends.
//!
//! The ledger's batch text takes the whole of it between brackets (ledger_batch.rs), and the
//! access line copies out the values it shows unchanged (accounting.rs). So a request's strings
//! are escaped and its integers formatted once, where the line and the record each wrote them
//! (~1,800 instructions a request: ten strings and six integers twice).

use crate::json_float::push_f64;
use crate::ledger_batch::Val;
use crate::translate::json_out::{push_str, push_u64};

/// `text` is `v0,v1,...` and then `PAD` zero bytes; `ends[i]` is where value i ends in it. A
/// value left out (see `write`) is empty.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct RecordText {
    text: Vec<u8>,
    ends: Vec<usize>,
}

/// Zero bytes after the values, so a value up to this long is copied out as a fixed-size block
/// (`value_block`): a few moves, where a slice of any length is a call to memcpy (~20 of them an
/// access line).
pub const PAD: usize = 32;

impl RecordText {
    /// The values in order; `wanted` (by index, when given) says which to write: the others stay
    /// empty, for a reader that does not show them. A value the ledger does not store
    /// (`Val::Other`) is written as null: the ledger refuses such a record.
    pub fn write(&mut self, vals: &[Val<'_>], wanted: Option<&[bool]>) {
        self.text.clear();
        self.ends.clear();
        // Room for a usual record at once (~300 bytes): its writes do not grow the text.
        self.text.reserve(512);
        for (i, v) in vals.iter().enumerate() {
            if i > 0 {
                self.text.push(b',');
            }
            if wanted.is_none_or(|w| w.get(i).copied().unwrap_or(false)) {
                push_val(&mut self.text, *v);
            }
            self.ends.push(self.text.len());
        }
        self.text.extend_from_slice(&[0u8; PAD]);
    }

    /// The values as written, `v0,v1,...`.
    pub fn text(&self) -> &[u8] {
        let len = self.text.len().saturating_sub(PAD);
        self.text.get(..len).unwrap_or_default()
    }

    /// Value `i` as written (empty when it was left out or there is no such value).
    pub fn value(&self, i: usize) -> &[u8] {
        let (start, end) = self.span(i);
        self.text.get(start..end).unwrap_or_default()
    }

    /// Value `i` as the `PAD` bytes from its start and its length, when it is at most that long
    /// (and not empty); `value` otherwise.
    pub fn value_block(&self, i: usize) -> Option<(&[u8; PAD], usize)> {
        let (start, end) = self.span(i);
        let len = end.saturating_sub(start);
        if len == 0 || len > PAD {
            return None;
        }
        let block = self.text.get(start..start + PAD)?;
        Some((<&[u8; PAD]>::try_from(block).ok()?, len))
    }

    /// [start, end) of value `i` in the text ((0, 0) for no such value).
    fn span(&self, i: usize) -> (usize, usize) {
        let Some(&end) = self.ends.get(i) else {
            return (0, 0);
        };
        let start = match i.checked_sub(1) {
            Some(before) => self.ends.get(before).map_or(0, |e| e + 1),
            None => 0,
        };
        (start, end)
    }
}

/// One value as JSON (an int as written, a float by its shortest digits, a text escaped).
pub fn push_val(out: &mut Vec<u8>, v: Val<'_>) {
    match v {
        Val::Null | Val::Other => out.extend_from_slice(b"null"),
        Val::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        Val::Int(n) => {
            if n < 0 {
                out.push(b'-');
            }
            push_u64(out, n.unsigned_abs());
        }
        Val::Real(x) => push_f64(out, x),
        Val::Text(s) => push_str(out, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_value_once_and_each_findable() {
        let mut r = RecordText::default();
        let vals = [
            Val::Real(1.5),
            Val::Text("a\"b"),
            Val::Int(-42),
            Val::Null,
            Val::Bool(false),
            Val::Other,
        ];
        r.write(&vals, None);
        assert_eq!(
            String::from_utf8_lossy(r.text()),
            r#"1.5,"a\"b",-42,null,false,null"#
        );
        let each: Vec<String> = (0..6)
            .map(|i| String::from_utf8_lossy(r.value(i)).into_owned())
            .collect();
        assert_eq!(each, ["1.5", r#""a\"b""#, "-42", "null", "false", "null"]);
        assert_eq!(r.value(6), b"");
    }

    #[test]
    fn values_not_wanted_stay_empty_and_a_rewrite_starts_afresh() {
        let mut r = RecordText::default();
        r.write(&[Val::Int(1), Val::Int(2)], None);
        r.write(
            &[Val::Text("x"), Val::Real(0.25), Val::Int(7)],
            Some(&[true, false, true]),
        );
        assert_eq!(r.text(), br#""x",,7"#);
        assert_eq!(r.value_block(2).map(|(b, n)| &b[..n]), Some(&b"7"[..]));
        assert_eq!(r.value_block(1), None); // left out
        assert_eq!(
            (r.value(0), r.value(1), r.value(2)),
            (&b"\"x\""[..], &b""[..], &b"7"[..])
        );
        assert_eq!(r.value(3), b""); // no fourth value
    }
}
