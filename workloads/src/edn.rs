//! A small EDN reader: enough of the format for Jepsen and Porcupine histories (nil, booleans,
//! integers, floats, strings, characters, keywords, symbols, lists, vectors, maps, sets,
//! tagged values, `#_` discards, `;` comments; commas are whitespace).

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Edn {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Char(char),
    /// Without the leading colon.
    Keyword(String),
    Symbol(String),
    List(Vec<Edn>),
    Vector(Vec<Edn>),
    Map(Vec<(Edn, Edn)>),
    Set(Vec<Edn>),
    Tagged(String, Box<Edn>),
}

impl Edn {
    pub(crate) fn get(&self, keyword: &str) -> Option<&Edn> {
        match self {
            Edn::Map(entries) => entries.iter().find_map(|(k, v)| match k {
                Edn::Keyword(name) if name == keyword => Some(v),
                _ => None,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for Edn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, open: &str, items: &[Edn], close: &str) -> fmt::Result {
            f.write_str(open)?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(" ")?;
                }
                write!(f, "{item}")?;
            }
            f.write_str(close)
        }
        match self {
            Edn::Nil => f.write_str("nil"),
            Edn::Bool(b) => write!(f, "{b}"),
            Edn::Int(n) => write!(f, "{n}"),
            Edn::Float(x) => write!(f, "{x}"),
            Edn::Str(s) => write!(f, "{s:?}"),
            Edn::Char(c) => write!(f, "\\{c}"),
            Edn::Keyword(k) => write!(f, ":{k}"),
            Edn::Symbol(s) => f.write_str(s),
            Edn::List(items) => seq(f, "(", items, ")"),
            Edn::Vector(items) => seq(f, "[", items, "]"),
            Edn::Set(items) => seq(f, "#{", items, "}"),
            Edn::Map(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k} {v}")?;
                }
                f.write_str("}")
            }
            Edn::Tagged(tag, value) => write!(f, "#{tag} {value}"),
        }
    }
}

/// Parses every top-level form of `text`.
pub(crate) fn parse_all(text: &str) -> Result<Vec<Edn>, String> {
    let mut reader = Reader {
        bytes: text.as_bytes(),
        text,
        pos: 0,
    };
    let mut forms = Vec::new();
    loop {
        reader.skip_whitespace();
        if reader.pos >= reader.bytes.len() {
            return Ok(forms);
        }
        forms.push(reader.form(0)?);
    }
}

/// Nesting deeper than this is rejected (bounds the recursion).
const DEPTH_MAX: usize = 64;

struct Reader<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b',' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b';'
        )
}

impl Reader<'_> {
    fn error(&self, message: &str) -> String {
        format!("{message} at byte {}", self.pos)
    }

    fn skip_whitespace(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            if b.is_ascii_whitespace() || b == b',' {
                self.pos += 1;
            } else if b == b';' {
                while self.bytes.get(self.pos).is_some_and(|&b| b != b'\n') {
                    self.pos += 1;
                }
            } else {
                return;
            }
        }
    }

    fn token(&mut self) -> &str {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(|&b| !is_delimiter(b)) {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    fn sequence(&mut self, close: u8, depth: usize) -> Result<Vec<Edn>, String> {
        let mut items = Vec::new();
        loop {
            self.skip_whitespace();
            match self.bytes.get(self.pos) {
                None => return Err(self.error("unterminated collection")),
                Some(&b) if b == close => {
                    self.pos += 1;
                    return Ok(items);
                }
                Some(_) => {
                    if self.discard(depth)? {
                        continue;
                    }
                    items.push(self.form(depth + 1)?);
                }
            }
        }
    }

    /// Skips a `#_` form; true if there was one.
    fn discard(&mut self, depth: usize) -> Result<bool, String> {
        if self.bytes[self.pos..].starts_with(b"#_") {
            self.pos += 2;
            self.skip_whitespace();
            self.form(depth + 1)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn form(&mut self, depth: usize) -> Result<Edn, String> {
        if depth > DEPTH_MAX {
            return Err(self.error("nested too deeply"));
        }
        self.skip_whitespace();
        while self.discard(depth)? {
            self.skip_whitespace();
        }
        let Some(&b) = self.bytes.get(self.pos) else {
            return Err(self.error("unexpected end of input"));
        };
        match b {
            b'(' => {
                self.pos += 1;
                Ok(Edn::List(self.sequence(b')', depth)?))
            }
            b'[' => {
                self.pos += 1;
                Ok(Edn::Vector(self.sequence(b']', depth)?))
            }
            b'{' => {
                self.pos += 1;
                let items = self.sequence(b'}', depth)?;
                if items.len() % 2 != 0 {
                    return Err(self.error("map with an odd number of forms"));
                }
                let mut entries = Vec::with_capacity(items.len() / 2);
                let mut items = items.into_iter();
                while let (Some(k), Some(v)) = (items.next(), items.next()) {
                    entries.push((k, v));
                }
                Ok(Edn::Map(entries))
            }
            b'#' => {
                self.pos += 1;
                if self.bytes.get(self.pos) == Some(&b'{') {
                    self.pos += 1;
                    return Ok(Edn::Set(self.sequence(b'}', depth)?));
                }
                let tag = self.token().to_string();
                if tag.is_empty() {
                    return Err(self.error("bad dispatch character"));
                }
                let value = self.form(depth + 1)?;
                Ok(Edn::Tagged(tag, Box::new(value)))
            }
            b'"' => self.string(),
            b')' | b']' | b'}' => Err(self.error("unexpected closing delimiter")),
            b'\\' => {
                self.pos += 1;
                let start = self.pos;
                // a character literal is at least one character, then up to a delimiter
                let first = self.text[start..]
                    .chars()
                    .next()
                    .ok_or_else(|| self.error("unterminated character"))?;
                self.pos += first.len_utf8();
                let rest = self.token();
                let name = format!("{first}{rest}");
                let c = match name.as_str() {
                    "newline" => '\n',
                    "space" => ' ',
                    "tab" => '\t',
                    "return" => '\r',
                    _ if rest.is_empty() => first,
                    _ => return Err(self.error("unknown character name")),
                };
                Ok(Edn::Char(c))
            }
            b':' => {
                self.pos += 1;
                let name = self.token();
                if name.is_empty() {
                    return Err(self.error("empty keyword"));
                }
                Ok(Edn::Keyword(name.to_string()))
            }
            _ => {
                let token = self.token().to_string();
                if token.is_empty() {
                    return Err(self.error("unexpected character"));
                }
                Ok(atom(&token))
            }
        }
    }

    fn string(&mut self) -> Result<Edn, String> {
        self.pos += 1; // opening quote
        let mut out = String::new();
        loop {
            let rest = &self.text[self.pos..];
            let Some(c) = rest.chars().next() else {
                return Err(self.error("unterminated string"));
            };
            self.pos += c.len_utf8();
            match c {
                '"' => return Ok(Edn::Str(out)),
                '\\' => {
                    let Some(e) = self.text[self.pos..].chars().next() else {
                        return Err(self.error("unterminated string"));
                    };
                    self.pos += e.len_utf8();
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        '\\' => out.push('\\'),
                        '"' => out.push('"'),
                        'u' => {
                            let hex = self
                                .text
                                .get(self.pos..self.pos + 4)
                                .ok_or_else(|| self.error("short \\u escape"))?;
                            let code = u32::from_str_radix(hex, 16)
                                .map_err(|_| self.error("bad \\u escape"))?;
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                            self.pos += 4;
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }
}

fn atom(token: &str) -> Edn {
    match token {
        "nil" => return Edn::Nil,
        "true" => return Edn::Bool(true),
        "false" => return Edn::Bool(false),
        _ => {}
    }
    let digits = token.strip_suffix('N').unwrap_or(token);
    if let Ok(n) = digits.parse::<i64>() {
        return Edn::Int(n);
    }
    let float = token.strip_suffix('M').unwrap_or(token);
    if float
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-' || b == b'+' || b == b'.')
        && let Ok(x) = float.parse::<f64>()
    {
        return Edn::Float(x);
    }
    Edn::Symbol(token.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Edn {
        let mut forms = parse_all(text).unwrap();
        assert_eq!(forms.len(), 1, "{text}");
        forms.pop().unwrap()
    }

    #[test]
    fn atoms() {
        assert_eq!(one("nil"), Edn::Nil);
        assert_eq!(one("true"), Edn::Bool(true));
        assert_eq!(one("-42"), Edn::Int(-42));
        assert_eq!(one("7N"), Edn::Int(7));
        assert_eq!(one("1.5"), Edn::Float(1.5));
        assert_eq!(one(":timed-out"), Edn::Keyword("timed-out".into()));
        assert_eq!(one(":jepsen/x"), Edn::Keyword("jepsen/x".into()));
        assert_eq!(one("foo"), Edn::Symbol("foo".into()));
        assert_eq!(one(r#""a\"b\n\u0041""#), Edn::Str("a\"b\nA".into()));
        assert_eq!(one(r"\a"), Edn::Char('a'));
        assert_eq!(one(r"\newline"), Edn::Char('\n'));
    }

    #[test]
    fn collections() {
        let map = one(r#"{:process 0, :type :invoke, :f :get, :key "6", :value nil}"#);
        assert_eq!(map.get("process"), Some(&Edn::Int(0)));
        assert_eq!(map.get("key"), Some(&Edn::Str("6".into())));
        assert_eq!(map.get("value"), Some(&Edn::Nil));
        assert_eq!(map.get("missing"), None);
        assert_eq!(
            one("[1 2 (3) #{4}]"),
            Edn::Vector(vec![
                Edn::Int(1),
                Edn::Int(2),
                Edn::List(vec![Edn::Int(3)]),
                Edn::Set(vec![Edn::Int(4)])
            ])
        );
        assert_eq!(
            one("[1 #_ 2 3] ; comment"),
            Edn::Vector(vec![Edn::Int(1), Edn::Int(3)])
        );
        assert_eq!(
            one("#inst \"2020\""),
            Edn::Tagged("inst".into(), Box::new(Edn::Str("2020".into())))
        );
        assert_eq!(parse_all("{:a 1}\n{:a 2}\n").unwrap().len(), 2);
    }

    #[test]
    fn errors() {
        for bad in [
            "[1 2",
            "{:a}",
            "\"abc",
            ")",
            "#",
            ":",
            "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
        ] {
            assert!(parse_all(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        let text = r#"{:process 0, :value [1 "x" nil :k]}"#;
        assert_eq!(one(&one(text).to_string()), one(text));
    }
}
