//! The bytes of a content chunk around its text, so that the next chunk with the same bytes is
//! read without a scan.
//!
//! A server's content chunks differ in their text and nowhere else: the id, the object, the
//! created time, the model, the index and the nulls after the text repeat byte for byte. So a
//! chunk that is the last content chunk's bytes with one string token in place of its text is
//! that chunk with another text, exactly: the same bytes before the token leave the reader in
//! the same place, and the same bytes after it read the same way. Checking that is two
//! compares and a read of the text (~400 instructions), where the scan of a ~170-byte chunk
//! costs ~3,500 (callgrind; 50 of them a stream). Anything else (another shape, the first
//! chunk of a stream, a key order that changes) is scanned as before and may become the next
//! template.

use std::borrow::Cow;

use super::borrowed::Text;
use super::chunk::{scan_with_spans, text_token, Choice, Chunk, Delta, Spans, TextField};

/// Where a value of the template is: [start, end) in the bytes before the text, or the same
/// counted back from the end of the chunk, in the bytes after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    Front(usize, usize),
    Back(usize, usize),
}

#[derive(Debug, Default)]
pub(super) struct Template {
    /// The chunk up to and with its text's opening quote.
    prefix: Vec<u8>,
    /// The chunk from its text's closing quote on.
    suffix: Vec<u8>,
    /// The id's and the object's characters (strings without escapes), None when null or absent.
    id: Option<Place>,
    object: Option<Place>,
    index: u32,
    /// Which delta field the text is; None: no template yet.
    field: Option<TextField>,
    /// The last `read_chunk` rebuilt its chunk from the template.
    hit: bool,
}

impl Template {
    /// The chunk as serde reads it (None when the data is not a chunk): rebuilt when it has the
    /// template's bytes around its text, else scanned (and learned) or left to serde.
    pub(super) fn read_chunk<'a>(&mut self, data: &'a [u8]) -> Option<Chunk<'a>> {
        self.hit = false;
        if let Some(chunk) = self.read(data) {
            self.hit = true;
            return Some(chunk);
        }
        match scan_with_spans(data) {
            Some((chunk, spans)) => {
                self.learn(data, &chunk, &spans);
                Some(chunk)
            }
            None => serde_json::from_slice(data).ok(),
        }
    }

    /// The chunk when `data` is the template's bytes around one string token.
    /// An event that was not read as a chunk: not a hit.
    pub(super) fn miss(&mut self) {
        self.hit = false;
    }

    /// Whether the last `read_chunk` rebuilt its chunk from the template.
    pub(super) fn hit(&self) -> bool {
        self.hit
    }

    fn read<'a>(&self, data: &'a [u8]) -> Option<Chunk<'a>> {
        let field = self.field?;
        let (n, p, s) = (data.len(), self.prefix.len(), self.suffix.len());
        if n < p + s || !data.starts_with(&self.prefix) || !data.ends_with(&self.suffix) {
            return None;
        }
        // The token opens with the prefix's last byte and must close with the suffix's first.
        let (text, end) = text_token(data, p.checked_sub(1)?)?;
        if end != n - s + 1 {
            return None;
        }
        let at = |place: Option<Place>| -> Option<Option<Text<'a>>> {
            let Some(place) = place else {
                return Some(None);
            };
            let (a, b) = match place {
                Place::Front(a, b) => (a, b),
                Place::Back(a, b) => (n.checked_sub(a)?, n.checked_sub(b)?),
            };
            let s = std::str::from_utf8(data.get(a..b)?).ok()?;
            Some(Some(Text(Cow::Borrowed(s))))
        };
        let mut delta = Delta {
            content: None,
            reasoning_content: None,
            reasoning: None,
            tool_calls: None,
        };
        let slot = match field {
            TextField::Content => &mut delta.content,
            TextField::ReasoningContent => &mut delta.reasoning_content,
            TextField::Reasoning => &mut delta.reasoning,
        };
        *slot = Some(text);
        Some(Chunk {
            id: at(self.id)?,
            object: at(self.object)?,
            choices: Some(vec![Choice {
                index: self.index,
                delta: Some(delta),
                finish_reason: None,
                stop_reason: None,
                matched_stop: None,
            }]),
            usage: None,
            error: None,
        })
    }

    /// Takes `chunk` (as the scan read `data`, its values where `spans` say) as the template
    /// when it is one choice whose delta has one text and nothing else the template does not
    /// rebuild; else keeps the template it has (which still reads only chunks of its bytes).
    fn learn(&mut self, data: &[u8], chunk: &Chunk<'_>, spans: &Spans) {
        if let Some(learned) = Self::of(data, chunk, spans) {
            *self = learned;
        }
    }

    fn of(data: &[u8], chunk: &Chunk<'_>, spans: &Spans) -> Option<Template> {
        let [choice] = chunk.choices.as_deref()? else {
            return None;
        };
        let d = choice.delta.as_ref()?;
        let plain = chunk.usage.is_none()
            && chunk.error.is_none()
            && choice.finish_reason.is_none()
            && choice.stop_reason.is_none()
            && choice.matched_stop.is_none()
            && d.tool_calls.is_none();
        if !plain {
            return None;
        }
        let texts = [
            (TextField::Content, &d.content, spans.content),
            (
                TextField::ReasoningContent,
                &d.reasoning_content,
                spans.reasoning_content,
            ),
            (TextField::Reasoning, &d.reasoning, spans.reasoning),
        ];
        let mut present = texts.into_iter().filter(|(_, text, _)| text.is_some());
        let (field, _, span) = present.next()?;
        if present.next().is_some() {
            return None;
        }
        let (start, end) = span?;
        // A value of the chunk by its token: the characters of a string without escapes.
        let place =
            |text: &Option<Text<'_>>, token: Option<(usize, usize)>| -> Option<Option<Place>> {
                match (text, token) {
                    (None, _) => Some(None),
                    (Some(Text(Cow::Borrowed(_))), Some((a, b))) if b <= start => {
                        Some(Some(Place::Front(a + 1, b - 1)))
                    }
                    (Some(Text(Cow::Borrowed(_))), Some((a, b))) if a >= end => Some(Some(
                        Place::Back(data.len() - (a + 1), data.len() - (b - 1)),
                    )),
                    _ => None,
                }
            };
        Some(Template {
            prefix: data.get(..=start)?.to_vec(),
            suffix: data.get(end.checked_sub(1)?..)?.to_vec(),
            id: place(&chunk.id, spans.id)?,
            object: place(&chunk.object, spans.object)?,
            index: choice.index,
            field: Some(field),
            hit: false,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::super::chunk::seen;
    use super::*;

    /// `next` read after `first` through one template, and whether the template read it.
    fn after(first: &str, next: &str) -> (Option<String>, bool) {
        let mut t = Template::default();
        t.read_chunk(first.as_bytes());
        let rebuilt = t.read(next.as_bytes()).is_some();
        let by_template = t.read_chunk(next.as_bytes()).map(|c| seen(&c));
        assert_eq!(t.hit(), rebuilt);
        let by_serde = serde_json::from_slice::<Chunk<'_>>(next.as_bytes())
            .ok()
            .map(|c| seen(&c));
        assert_eq!(by_template, by_serde, "{first} then {next}");
        (by_template, rebuilt)
    }

    #[test]
    fn a_content_chunk_like_the_last_is_rebuilt_as_serde_reads_it() {
        let servers = [
            // the bundled mock, vLLM, Ollama, llama.cpp (text before the id), reasoning
            (
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lorem "},"finish_reason":null}]}"#,
                r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"a\n\"b\" \u00e9 \ud83d\ude00"},"finish_reason":null}]}"#,
            ),
            (
                r#"{"id":"c2","object":"chat.completion.chunk","created":1,"model":"q","choices":[{"index":0,"delta":{"content":"x"},"logprobs":null,"finish_reason":null,"stop_reason":null}]}"#,
                r#"{"id":"c2","object":"chat.completion.chunk","created":1,"model":"q","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":null,"stop_reason":null}]}"#,
            ),
            (
                r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"y"}}],"created":1,"id":"c","model":"g","object":"chat.completion.chunk"}"#,
                r#"{"choices":[{"finish_reason":null,"index":0,"delta":{"content":"zz"}}],"created":1,"id":"c","model":"g","object":"chat.completion.chunk"}"#,
            ),
            (
                r#"{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"think","content":null}}]}"#,
                r#"{"id":"c","choices":[{"index":0,"delta":{"reasoning_content":"more","content":null}}]}"#,
            ),
            (
                r#"{"id":null,"choices":[{"index":2,"delta":{"reasoning":"r"}}]}"#,
                r#"{"id":null,"choices":[{"index":2,"delta":{"reasoning":"s\/t"}}]}"#,
            ),
        ];
        for (first, next) in servers {
            let (read, rebuilt) = after(first, next);
            assert!(read.is_some() && rebuilt, "not rebuilt: {next}");
        }
    }

    #[test]
    fn anything_else_is_read_as_before() {
        let first = r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#;
        let others = [
            // other bytes around the text, or not one string token between them
            r#"{"id":"d","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a","x":"b"},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"},"b":"c"},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]} "#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a\q"},"finish_reason":null}]}"#,
            "{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\tb\"},\"finish_reason\":null}]}",
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"},"finish_reason":null}]}"#,
            r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}]}"#,
            r#"{"id":"c","choices":[],"usage":{"prompt_tokens":1}}"#,
        ];
        for next in others {
            let (_, rebuilt) = after(first, next);
            assert!(!rebuilt, "rebuilt: {next}");
        }
    }

    #[test]
    fn chunks_that_are_not_one_text_make_no_template() {
        let shapes = [
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a","reasoning":"b"}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}"#,
            r#"{"id":"c\u0064","choices":[{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{"content":null}}]}"#,
            r#"{"id":"c","choices":[{"index":0,"delta":{}}]}"#,
        ];
        for s in shapes {
            let mut t = Template::default();
            assert!(t.read_chunk(s.as_bytes()).is_some(), "{s}");
            assert_eq!(t.field, None, "a template of {s}");
        }
    }

    #[test]
    fn random_texts_between_a_templates_bytes_read_as_serde_reads_them() {
        let first = r#"{"id":"chatcmpl-9","object":"chat.completion.chunk","created":1796177576,"model":"m","choices":[{"index":0,"delta":{"content":"x"},"logprobs":null,"finish_reason":null}]}"#;
        let (head, tail) = first.split_once("\"x\"").unwrap();
        let pieces = [
            "a",
            " ",
            "\\\"",
            "\\\\",
            "\\n",
            "\\u00e9",
            "\\ud83d\\ude00",
            "é",
            "中",
            "\\x",
            "\\ud800",
            "\"",
            "\t",
            "\\",
            "}",
            "\",\"y\":\"",
        ];
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut rebuilt = 0;
        for _ in 0..5_000 {
            let mut text = String::new();
            for _ in 0..(state % 5) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(pieces[(state % pieces.len() as u64) as usize]);
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let next = format!("{head}\"{text}\"{tail}");
            if after(first, &next).1 {
                rebuilt += 1;
            }
        }
        assert!(rebuilt > 1_000, "only {rebuilt} rebuilt");
    }
}
