//! Knowing, piece by piece, when a streamed JSON object or array has been closed.
//!
//! Once a top-level object is closed, the only thing that may follow in a valid JSON text is
//! whitespace: that is what lets a tool call's block be closed before the stream ends without
//! ever cutting its input short.

#[derive(Clone, Debug, Default)]
pub(crate) struct JsonCompletion {
    depth: u32,
    in_string: bool,
    escaped: bool,
    /// A top-level scalar (or a stray byte): such text never counts as complete.
    scalar: bool,
    complete: bool,
}

impl JsonCompletion {
    pub(crate) fn feed(&mut self, piece: &[u8]) {
        if self.complete || self.scalar {
            return;
        }
        for &b in piece {
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match b {
                b'"' => {
                    if self.depth == 0 {
                        self.scalar = true;
                        return;
                    }
                    self.in_string = true;
                }
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    if self.depth == 0 {
                        self.scalar = true;
                        return;
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        self.complete = true;
                        return;
                    }
                }
                b' ' | b'\t' | b'\n' | b'\r' => {}
                _ => {
                    if self.depth == 0 {
                        self.scalar = true;
                        return;
                    }
                }
            }
        }
    }

    /// True once a top-level object or array has been closed.
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    fn complete_after(pieces: &[&str]) -> Vec<bool> {
        let mut s = JsonCompletion::default();
        pieces
            .iter()
            .map(|p| {
                s.feed(p.as_bytes());
                s.is_complete()
            })
            .collect()
    }

    #[test]
    fn tracks_objects_across_pieces() {
        assert_eq!(
            complete_after(&["{\"a\":", " {\"b\": [1, 2", "]}", "}"]),
            [false, false, false, true]
        );
        assert_eq!(complete_after(&["{}"]), [true]);
        assert_eq!(
            complete_after(&["", " ", "{", "}"]),
            [false, false, false, true]
        );
    }

    #[test]
    fn ignores_brackets_inside_strings() {
        assert_eq!(
            complete_after(&["{\"s\": \"}]\\\"", "{\\\\\"", "}"]),
            [false, false, true]
        );
    }

    #[test]
    fn scalars_never_complete() {
        assert_eq!(complete_after(&["\"x\"", "}"]), [false, false]);
        assert_eq!(complete_after(&["12"]), [false]);
        assert_eq!(complete_after(&["}"]), [false]);
    }
}
