//! A batch's records as PostgreSQL takes them: the batch's JSON text, unpacked by the database.
//!
//! The writer sends a batch as one parameter of one statement (usage/ledger_pg.py), and
//! PostgreSQL spreads it into rows. So the gateway's core spends nothing a record on the store:
//! the text was written once on the loop, as the SQLite writer stores it (ledger_batch.rs).
//!
//! PostgreSQL's text types cannot hold U+0000, and its jsonb refuses the `\u0000` escape for
//! the whole statement; a NUL in a header a client sent would otherwise cost the batch's other
//! records their one-statement write. Here it becomes U+FFFD, as a text column can store it.

use std::borrow::Cow;

use memchr::{memchr, memmem};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::row_queue::LedgerBatch;

#[pymethods]
impl LedgerBatch {
    /// The records' JSON text (`[[...],...]`) with every `\u0000` as `\ufffd`; None once a
    /// writer has taken the batch.
    fn records_for_postgres<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyString>>> {
        let Ok(slot) = self.batch.lock() else {
            return Ok(None);
        };
        let Some(batch) = slot.as_ref() else {
            return Ok(None);
        };
        let text = without_nul_escapes(&batch.records);
        std::str::from_utf8(&text)
            .map(|t| Some(PyString::new(py, t)))
            .map_err(|_| PyValueError::new_err("a ledger batch's text is not UTF-8"))
    }
}

/// `json` with each `\u0000` escape (not an escaped backslash followed by `u0000`) as `\ufffd`;
/// borrowed as it is when it has none (nearly always).
pub fn without_nul_escapes(json: &[u8]) -> Cow<'_, [u8]> {
    if memmem::find(json, b"u0000").is_none() {
        return Cow::Borrowed(json);
    }
    let mut out = Vec::with_capacity(json.len());
    let mut rest = json;
    while let Some(at) = memchr(b'\\', rest) {
        out.extend_from_slice(&rest[..at]);
        let escape = &rest[at..];
        if escape.starts_with(b"\\u0000") {
            out.extend_from_slice(b"\\ufffd");
            rest = &escape[6..];
        } else {
            // A backslash and the byte it escapes, together: `\\u0000` is a backslash, then text.
            let n = escape.len().min(2);
            out.extend_from_slice(&escape[..n]);
            rest = &escape[n..];
        }
    }
    out.extend_from_slice(rest);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::without_nul_escapes;

    fn clean(s: &str) -> String {
        String::from_utf8(without_nul_escapes(s.as_bytes()).into_owned()).unwrap_or_default()
    }

    #[test]
    fn a_nul_escape_becomes_the_replacement_character() {
        assert_eq!(clean(r#"[["a\u0000b"]]"#), r#"[["a\ufffdb"]]"#);
        assert_eq!(clean(r#"["\u0000\u0000"]"#), r#"["\ufffd\ufffd"]"#);
    }

    #[test]
    fn other_escapes_and_an_escaped_backslash_stay() {
        for s in [
            r#"[["a\\u0000b"]]"#, // a backslash, then the text u0000
            r#"["\u0001\"\\\n"]"#,
            r#"["\\\\u0000"]"#,
            "[[\"é ✓ 日本\",1.5,null,true]]",
            r#"["ends with a backslash\\"]"#,
            "",
        ] {
            assert_eq!(clean(s), s);
        }
        assert_eq!(clean(r#"["\\\u0000"]"#), r#"["\\\ufffd"]"#);
    }

    #[test]
    fn a_cut_escape_at_the_end_is_kept() {
        assert_eq!(&*without_nul_escapes(b"\\"), b"\\");
        assert_eq!(&*without_nul_escapes(b"\\u00"), b"\\u00");
    }
}
