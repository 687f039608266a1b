//! A JSON string read from a chunk without copying it when it has no escapes.
//!
//! serde's `Cow<str>` always deserializes owned; per-chunk text (deltas, argument pieces)
//! is read through this instead, so the common escape-free piece is a slice of the chunk.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserializer, Error, Visitor};
use serde::Deserialize;

#[derive(Debug)]
pub(crate) struct Text<'a>(pub Cow<'a, str>);

impl std::ops::Deref for Text<'_> {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }

            fn visit_str<E: Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: Error>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder<'a> {
        #[serde(borrow, default)]
        t: Option<Text<'a>>,
    }

    #[test]
    fn borrows_unless_escaped() {
        let h: Holder<'_> = serde_json::from_slice(br#"{"t": "plain text"}"#).unwrap();
        assert!(matches!(h.t.unwrap().0, Cow::Borrowed("plain text")));
        let h: Holder<'_> = serde_json::from_slice(br#"{"t": "a\"b\n"}"#).unwrap();
        let t = h.t.unwrap();
        assert!(matches!(t.0, Cow::Owned(_)));
        assert_eq!(&*t, "a\"b\n");
        let h: Holder<'_> = serde_json::from_slice(br#"{"t": null}"#).unwrap();
        assert!(h.t.is_none());
        assert!(serde_json::from_slice::<Holder<'_>>(br#"{"t": 1}"#).is_err());
    }
}
