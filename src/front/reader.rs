//! A strict JSON reader over a request body's bytes, for reading a large body in one pass.
//!
//! Through serde, a tensor's `data` can only be captured as raw text first (its element
//! type is given beside it, possibly after it), which costs a pass over every number
//! before the scan that parses them: about as long as the scan itself. This reader walks
//! the body itself: a caller reads objects member by member, hands the bytes at a `data`
//! member straight to the float scanner, and reads small members (names, shapes,
//! parameters) by skipping them and giving their text to serde. Skipping checks JSON's
//! grammar (strings, escapes, numbers, literals, nesting up to serde_json's depth limit),
//! so a body this reader takes is one serde_json takes too.
//!
//! Every method returns `None` on anything it does not take (malformed JSON, a value of an
//! unexpected kind, a duplicate key the caller refuses): the caller then reads the body
//! with serde, which takes the same bodies and words every error, so errors are worded in
//! one place.

use serde::de::DeserializeOwned;
use std::borrow::Cow;

/// serde_json's own recursion limit: deeper bodies go to serde, which refuses them.
const MAX_DEPTH: usize = 128;

pub struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, at: 0, depth: 0 }
    }

    /// The whole body and the offset of the next value (after any whitespace), for a
    /// scanner that reads a value in place; [`Reader::seek`] moves past what it read.
    pub fn position(&mut self) -> (&'a [u8], usize) {
        self.skip_whitespace();
        (self.bytes, self.at)
    }

    pub fn seek(&mut self, at: usize) {
        self.at = at;
    }

    /// Whether the next value is `null` (then read).
    pub fn null(&mut self) -> bool {
        self.skip_whitespace();
        self.literal(b"null").is_some()
    }

    /// Reads an object, calling `member` with each key; `member` reads the value.
    pub fn object(&mut self, mut member: impl FnMut(&mut Self, Cow<'a, str>) -> Option<()>) -> Option<()> {
        self.open(b'{')?;
        if !self.close(b'}') {
            loop {
                let key = self.string()?;
                self.expect(b':')?;
                member(self, key)?;
                if self.close(b'}') {
                    break;
                }
                self.expect(b',')?;
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Reads an array, calling `element` for each element; `element` reads it.
    pub fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.open(b'[')?;
        if !self.close(b']') {
            loop {
                element(self)?;
                if self.close(b']') {
                    break;
                }
                self.expect(b',')?;
            }
        }
        self.depth -= 1;
        Some(())
    }

    /// Reads a string, unescaped (by serde_json when it holds escapes).
    pub fn string(&mut self) -> Option<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.at;
        let mut escaped = false;
        loop {
            match *self.bytes.get(self.at)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    self.at += 2;
                }
                0..0x20 => return None,
                _ => self.at += 1,
            }
        }
        let inside = self.bytes.get(start..self.at)?;
        self.at += 1;
        match escaped {
            false => std::str::from_utf8(inside).ok().map(Cow::Borrowed),
            true => serde_json::from_slice::<String>(&self.bytes[start - 1..self.at]).ok().map(Cow::Owned),
        }
    }

    /// Reads any value, checking its grammar, and returns its text.
    pub fn skip(&mut self) -> Option<&'a str> {
        self.skip_whitespace();
        let start = self.at;
        match *self.bytes.get(self.at)? {
            b'{' => self.object(|r, _| r.skip().map(drop))?,
            b'[' => self.array(|r| r.skip().map(drop))?,
            b'"' => self.string().map(drop)?,
            b't' => self.literal(b"true")?,
            b'f' => self.literal(b"false")?,
            b'n' => self.literal(b"null")?,
            _ => self.number()?,
        }
        std::str::from_utf8(&self.bytes[start..self.at]).ok()
    }

    /// Reads a (small) value as `T` through serde.
    pub fn value<T: DeserializeOwned>(&mut self) -> Option<T> {
        serde_json::from_str(self.skip()?).ok()
    }

    /// Checks that only whitespace follows.
    pub fn end(mut self) -> Option<()> {
        self.skip_whitespace();
        (self.at == self.bytes.len()).then_some(())
    }

    fn skip_whitespace(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.at) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.skip_whitespace();
        (self.bytes.get(self.at) == Some(&byte)).then(|| self.at += 1)
    }

    fn open(&mut self, byte: u8) -> Option<()> {
        self.expect(byte)?;
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    /// Reads `byte` if it comes next.
    fn close(&mut self, byte: u8) -> bool {
        self.expect(byte).is_some()
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        self.bytes[self.at..].starts_with(word).then(|| self.at += word.len())
    }

    /// JSON's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match *self.bytes.get(self.at)? {
            b'0' => self.at += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.at) {
            self.at += 1;
            if let Some(b'+' | b'-') = self.bytes.get(self.at) {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.at;
        self.digits();
        (self.at > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skipped(text: &str) -> Option<&str> {
        let mut reader = Reader::new(text.as_bytes());
        let span = reader.skip()?;
        reader.end().map(|_| span)
    }

    #[test]
    fn values_are_read_whole() {
        for text in
            [r#"{"a": [1, -2.5e+3, true, false, null, "x\"y\\u00e9"], "b": {}, "c": []}"#, "0", "-0.0E-0", r#""é""#]
        {
            assert_eq!(skipped(text), Some(text), "{text}");
        }
        assert_eq!(skipped("  [1]  "), Some("[1]"));
    }

    /// What this reader does not take, serde_json does not take either.
    #[test]
    fn what_serde_refuses_is_not_taken() {
        for text in [
            "[1,]",
            "[,1]",
            "{\"a\" 1}",
            "{\"a\": 1,}",
            "{1: 2}",
            "[01]",
            "[1.]",
            "[.5]",
            "[+1]",
            "[1e]",
            "[-]",
            "[tru]",
            "[nul]",
            "[NaN]",
            "\"a\tb\"",
            "\"\\x\"",
            "[1] [2]",
            "[1",
            "{",
        ] {
            assert_eq!(skipped(text), None, "{text}");
            assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_err(), "serde takes {text}");
        }
        // Past serde_json's depth limit the reader stops too (serde then reads or refuses it).
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(skipped(&deep), None);
    }

    #[test]
    fn objects_give_their_keys_unescaped() {
        let mut keys = Vec::new();
        let mut reader = Reader::new(br#"{"na\u006de": "x", "shape": [1, 2]}"#);
        reader.object(|r, key| r.skip().map(|_| keys.push(key.into_owned()))).unwrap();
        assert_eq!(keys, ["name", "shape"]);
        let mut reader = Reader::new(br#"{"shape": [1, 2]}"#);
        let mut shape = None;
        reader.object(|r, _| r.value::<Vec<i64>>().map(|v| shape = Some(v))).unwrap();
        assert_eq!(shape, Some(vec![1, 2]));
    }
}
