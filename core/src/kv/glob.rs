//! Redis glob patterns (`KEYS`, and later `SCAN MATCH`), matched as Redis's `stringmatchlen`
//! does, case-sensitively.
//!
//! Redis matches recursively, one level per `*`, and gives up (answers "no match") beyond 1000
//! levels. Here the pattern is first split into tokens that each match exactly one byte, or any
//! run of bytes for `*`, and then matched with the usual two-pointer backtracking to the last
//! `*`: no recursion, `O(pattern × key)` time whatever the pattern, and no nesting limit (so a
//! pattern with more than 1000 separate `*`s can match here where Redis would refuse it).

/// One element of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// `*` (a run of them counts as one): any run of bytes, including none.
    Star,
    /// `?`: any one byte.
    Any,
    /// A plain byte, or any byte after `\`.
    Byte(u8),
    /// `[...]`: one byte in (or with `^`, not in) the inclusive ranges; a single member `x` is
    /// the range `x-x`.
    Class {
        negated: bool,
        ranges: Vec<(u8, u8)>,
    },
}

impl Token {
    /// True when this one-byte token accepts `byte` (never called for [`Token::Star`]).
    fn accepts(&self, byte: u8) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(expected) => *expected == byte,
            Token::Class { negated, ranges } => {
                ranges
                    .iter()
                    .any(|&(low, high)| low <= byte && byte <= high)
                    != *negated
            }
        }
    }
}

/// A compiled glob pattern, for matching many keys against one pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    /// The pattern is exactly `*`: Redis's `KEYS *` lists every key without matching, which
    /// differs from matching only for the empty key.
    all: bool,
    /// The pattern is empty (the only pattern that matches the empty key, apart from `*`).
    empty: bool,
    tokens: Vec<Token>,
}

impl Glob {
    /// Compiles a pattern. Every byte string is a pattern: malformed classes are read the way
    /// Redis reads them (an unterminated `[abc` is a class running to the end of the pattern; a
    /// trailing `\` is a literal backslash).
    pub fn new(pattern: &[u8]) -> Glob {
        let mut tokens = Vec::new();
        let mut at = 0;
        while at < pattern.len() {
            let token = match pattern[at] {
                b'*' => {
                    // `**` is `*`.
                    while pattern.get(at + 1) == Some(&b'*') {
                        at += 1;
                    }
                    Token::Star
                }
                b'?' => Token::Any,
                b'\\' if at + 1 < pattern.len() => {
                    at += 1;
                    Token::Byte(pattern[at])
                }
                b'[' => {
                    let (token, end) = parse_class(pattern, at + 1);
                    // `end` is the index of the closing `]`, or the last byte of the pattern.
                    at = end;
                    token
                }
                byte => Token::Byte(byte),
            };
            tokens.push(token);
            at += 1;
        }
        Glob {
            all: pattern == b"*",
            empty: pattern.is_empty(),
            tokens,
        }
    }

    /// True when `key` matches the whole pattern.
    pub fn matches(&self, key: &[u8]) -> bool {
        if self.all {
            return true;
        }
        if key.is_empty() {
            // Redis's matcher stops as soon as either side is exhausted, so an empty key
            // matches only an empty pattern (`KEYS **` does not list the empty key).
            return self.empty;
        }
        let tokens = &self.tokens;
        let (mut token, mut byte) = (0, 0);
        // After the most recent `*`: the token that follows it, and the first key byte that
        // `*` has not swallowed yet.
        let mut resume: Option<(usize, usize)> = None;
        while byte < key.len() {
            match tokens.get(token) {
                Some(Token::Star) => {
                    token += 1;
                    resume = Some((token, byte));
                    continue;
                }
                Some(one) if one.accepts(key[byte]) => {
                    token += 1;
                    byte += 1;
                    continue;
                }
                _ => {}
            }
            // Mismatch: let the last `*` swallow one more byte and retry after it. Letting an
            // earlier `*` swallow more can never help, so this is complete.
            let Some((after_star, swallowed)) = resume else {
                return false;
            };
            token = after_star;
            byte = swallowed + 1;
            resume = Some((after_star, byte));
        }
        tokens[token..].iter().all(|t| *t == Token::Star)
    }
}

/// Reads a character class whose body starts at `at` (just after `[`), exactly as Redis's
/// `stringmatchlen` walks it. Returns the token and the index of its last byte: the closing `]`,
/// or the pattern's last byte when there is none.
fn parse_class(pattern: &[u8], mut at: usize) -> (Token, usize) {
    let len = pattern.len();
    let negated = pattern.get(at) == Some(&b'^');
    if negated {
        at += 1;
    }
    let mut ranges = Vec::new();
    loop {
        let left = len - at;
        match pattern.get(at) {
            Some(b'\\') if left >= 2 => {
                at += 1;
                ranges.push((pattern[at], pattern[at]));
            }
            Some(b']') => return (Token::Class { negated, ranges }, at),
            // Unterminated: everything up to the end was the class.
            None => return (Token::Class { negated, ranges }, len - 1),
            // Redis reads `a-]` as the range `a`..`]` too, and orders reversed ranges.
            Some(&start) if left >= 3 && pattern[at + 1] == b'-' => {
                let end = pattern[at + 2];
                ranges.push((start.min(end), start.max(end)));
                at += 2;
            }
            Some(&byte) => ranges.push((byte, byte)),
        }
        at += 1;
    }
}

/// True when `key` matches the glob `pattern` as Redis's `KEYS` decides: `*` any run of bytes,
/// `?` any byte, `[abc]`, `[^abc]` and `[a-z]` classes, `\` to take the next byte literally;
/// case-sensitive. Runs in `O(pattern × key)` without recursion. For many keys, compile once
/// with [`Glob::new`].
pub fn glob_match(pattern: &[u8], key: &[u8]) -> bool {
    Glob::new(pattern).matches(key)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A line-by-line port of Redis's `stringmatchlen_impl` (case-sensitive), as the reference
    /// for the differential test. Reads past the end see 0, as C sees the string's terminator.
    fn redis_stringmatch(pattern: &[u8], string: &[u8]) -> bool {
        fn at(bytes: &[u8], i: usize) -> u8 {
            bytes.get(i).copied().unwrap_or(0)
        }
        fn go(pattern: &[u8], string: &[u8], skip_longer: &mut bool, nesting: u32) -> bool {
            if nesting > 1000 {
                return false;
            }
            let (mut p, mut plen) = (0usize, pattern.len());
            let (mut s, mut slen) = (0usize, string.len());
            while plen > 0 && slen > 0 {
                match pattern[p] {
                    b'*' => {
                        while plen > 0 && at(pattern, p + 1) == b'*' {
                            p += 1;
                            plen -= 1;
                        }
                        if plen == 1 {
                            return true;
                        }
                        while slen > 0 {
                            if go(&pattern[p + 1..], &string[s..], skip_longer, nesting + 1) {
                                return true;
                            }
                            if *skip_longer {
                                return false;
                            }
                            s += 1;
                            slen -= 1;
                        }
                        *skip_longer = true;
                        return false;
                    }
                    b'?' => {
                        s += 1;
                        slen -= 1;
                    }
                    b'[' => {
                        p += 1;
                        plen -= 1;
                        let not = at(pattern, p) == b'^';
                        if not {
                            p += 1;
                            plen -= 1;
                        }
                        let mut matched = false;
                        loop {
                            if at(pattern, p) == b'\\' && plen >= 2 {
                                p += 1;
                                plen -= 1;
                                if pattern[p] == string[s] {
                                    matched = true;
                                }
                            } else if at(pattern, p) == b']' {
                                break;
                            } else if plen == 0 {
                                p -= 1;
                                plen += 1;
                                break;
                            } else if plen >= 3 && pattern[p + 1] == b'-' {
                                let (mut start, mut end) = (pattern[p], pattern[p + 2]);
                                if start > end {
                                    std::mem::swap(&mut start, &mut end);
                                }
                                p += 2;
                                plen -= 2;
                                if string[s] >= start && string[s] <= end {
                                    matched = true;
                                }
                            } else if pattern[p] == string[s] {
                                matched = true;
                            }
                            p += 1;
                            plen -= 1;
                        }
                        if not {
                            matched = !matched;
                        }
                        if !matched {
                            return false;
                        }
                        s += 1;
                        slen -= 1;
                    }
                    first => {
                        let mut expected = first;
                        if first == b'\\' && plen >= 2 {
                            p += 1;
                            plen -= 1;
                            expected = pattern[p];
                        }
                        if expected != string[s] {
                            return false;
                        }
                        s += 1;
                        slen -= 1;
                    }
                }
                p += 1;
                plen -= 1;
                if slen == 0 {
                    while at(pattern, p) == b'*' {
                        p += 1;
                        plen -= 1;
                    }
                    break;
                }
            }
            plen == 0 && slen == 0
        }
        let mut skip_longer = false;
        go(pattern, string, &mut skip_longer, 0)
    }

    /// `KEYS` as Redis answers it: `*` alone short-cuts to every key.
    fn redis_keys_match(pattern: &[u8], key: &[u8]) -> bool {
        pattern == b"*" || redis_stringmatch(pattern, key)
    }

    fn check(pattern: &str, matching: &[&str], not_matching: &[&str]) {
        for key in matching {
            assert!(
                glob_match(pattern.as_bytes(), key.as_bytes()),
                "{pattern:?} should match {key:?}"
            );
        }
        for key in not_matching {
            assert!(
                !glob_match(pattern.as_bytes(), key.as_bytes()),
                "{pattern:?} should not match {key:?}"
            );
        }
    }

    #[test]
    fn stars_and_question_marks() {
        check("*", &["", "a", "hello", "*"], &[]);
        check(
            "h*llo",
            &["hllo", "hello", "heeeello"],
            &["hell", "xhello", "hellox"],
        );
        check("h?llo", &["hello", "hallo", "hxllo"], &["hllo", "heello"]);
        check("*o", &["o", "hello", "oo"], &["", "ox"]);
        check(
            "a*b*c",
            &["abc", "aXbYc", "abbbc", "acbc"],
            &["ab", "acb", "abcd"],
        );
        check("**", &["x", "xyz"], &[""]);
        check("a*", &["a", "abc"], &["", "ba"]);
        check("*a*", &["a", "bab", "aaa"], &["", "bcd"]);
        check(
            "user:*:name",
            &["user:1:name", "user::name"],
            &["user:1:age"],
        );
        check("?", &["a", "?"], &["", "ab"]);
    }

    #[test]
    fn character_classes() {
        check("h[ae]llo", &["hello", "hallo"], &["hillo", "hllo"]);
        check("h[^e]llo", &["hallo", "hbllo"], &["hello", "hllo"]);
        check("h[a-b]llo", &["hallo", "hbllo"], &["hcllo", "hello"]);
        check("[b-a]", &["a", "b"], &["c"]);
        check("[^a-c]x", &["dx", "zx"], &["ax", "bx", "cx", "x"]);
        check("[\\]]", &["]"], &["\\", "["]);
        check("[a\\-z]", &["a", "-", "z"], &["b", "y"]);
        // An empty class matches nothing; `]` right after `[` closes it.
        check("[]a]", &[], &["a", "]", "]a]", "a]"]);
        check("[^]a]", &["xa]", "]a]"], &["a", "]"]);
        // Unterminated classes run to the end of the pattern.
        check("[abc", &["a", "c"], &["d", "ab", "[abc"]);
        check("x[^", &["xa", "x^"], &["x"]);
        check("[", &[], &["[", "a"]);
        // `a-]` is the range `]`..`a` in Redis (no closing bracket).
        check("[a-]", &["]", "^", "a"], &["b", "-"]);
    }

    #[test]
    fn escapes() {
        check("\\*", &["*"], &["a", "", "\\*"]);
        check("a\\?c", &["a?c"], &["abc"]);
        check("\\[a]", &["[a]"], &["a"]);
        check("\\\\", &["\\"], &["\\\\"]);
        // A trailing backslash is itself.
        check("a\\", &["a\\"], &["a"]);
        check("\\a\\b", &["ab"], &["\\a\\b"]);
    }

    #[test]
    fn empty_pattern_and_empty_key() {
        check("", &[""], &["a"]);
        check("[a]", &[], &[""]);
        check("?", &[], &[""]);
    }

    #[test]
    fn pathological_patterns_are_fast() {
        // Redis's regression test for exponential backtracking ("a*a*a*...b" on "aaaa...").
        let pattern = format!("{}b", "a*".repeat(60));
        let key = "a".repeat(200);
        assert!(!glob_match(pattern.as_bytes(), key.as_bytes()));
        // Deep star nesting neither recurses nor gives up.
        let pattern = "*a".repeat(5000);
        let key = "a".repeat(5000);
        assert!(glob_match(pattern.as_bytes(), key.as_bytes()));
        let pattern = format!("{}*", "[".repeat(10_000));
        assert!(!glob_match(pattern.as_bytes(), b"x"));
    }

    #[test]
    fn compiled_pattern_reuses() {
        let glob = Glob::new(b"k[0-9]");
        let keys: Vec<&[u8]> = vec![b"k1", b"kx", b"k9", b"k10"];
        let matched: Vec<&[u8]> = keys.into_iter().filter(|k| glob.matches(k)).collect();
        assert_eq!(matched, vec![b"k1" as &[u8], b"k9"]);
    }

    /// Patterns built from the bytes that mean something to the matcher, plus a few plain ones.
    fn pattern_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop::sample::select(b"*?[]^-\\ab".to_vec()), 0..10)
    }

    fn key_bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(prop::sample::select(b"ab-]^\\[*".to_vec()), 0..8)
    }

    proptest! {
        #[test]
        fn star_matches_everything(key in proptest::collection::vec(any::<u8>(), 0..32)) {
            prop_assert!(glob_match(b"*", &key));
        }

        #[test]
        fn an_escaped_literal_matches_only_itself(
            literal in proptest::collection::vec(any::<u8>(), 0..16),
            other in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let pattern: Vec<u8> = literal.iter().flat_map(|&b| [b'\\', b]).collect();
            prop_assert!(glob_match(&pattern, &literal));
            prop_assert_eq!(glob_match(&pattern, &other), other == literal);
        }

        /// Same answers as a direct port of Redis's recursive matcher, malformed patterns
        /// included.
        #[test]
        fn agrees_with_redis_stringmatchlen(pattern in pattern_bytes(), key in key_bytes()) {
            prop_assert_eq!(
                glob_match(&pattern, &key),
                redis_keys_match(&pattern, &key),
                "pattern {:?} key {:?}",
                String::from_utf8_lossy(&pattern),
                String::from_utf8_lossy(&key)
            );
        }
    }
}
