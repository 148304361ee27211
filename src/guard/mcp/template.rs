//! URI templates of MCP resource rules (RFC 6570 level 1 and 2: `{var}` and `{+var}`),
//! matched against the URI a request names.
//!
//! A rule's template says which URIs it covers, so matching errs towards covering less: a
//! `{var}` stands for one or more characters other than `/`, `?`, `#`, `{` and `}` (simple
//! string expansion percent-encodes every reserved character, so a value never holds a path
//! separator), a `{+var}` for one or more characters other than `?`, `#`, `{` and `}`
//! (reserved expansion keeps `/`). Matching is byte for byte and case-sensitive, as the server
//! matches. Any other expression (`{/var}`, `{?q}`, `{#f}`, `{a,b}`, `{var*}`, `{var:3}`) or an
//! unbalanced brace makes the template *inexact*: it matches no URI (a resource it would have
//! covered is unlisted), though the template itself, as written, still names its rule in
//! `resources/templates/list` and in `completion/complete` references.

/// One part of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    /// Text that must appear as written.
    Literal(Box<str>),
    /// A variable: `reserved` for `{+var}` (may hold `/`).
    Var { reserved: bool },
}

/// A parsed URI template.
#[derive(Debug, Clone)]
pub(crate) struct UriTemplate {
    /// The template as written (what `resources/templates/list` shows as `uriTemplate`).
    text: Box<str>,
    /// Its parts, or `None` when it uses syntax this matcher does not support.
    parts: Option<Box<[Part]>>,
}

impl UriTemplate {
    pub(crate) fn new(text: &str) -> Self {
        let parts = parse(text);
        if parts.is_none() {
            tracing::warn!(
                template = text,
                "MCP guard: resource template uses syntax other than {{var}} and {{+var}}: it matches no URI"
            );
        }
        UriTemplate {
            text: text.into(),
            parts,
        }
    }

    /// The template as written.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// True if `uri` is an expansion of this template.
    pub(crate) fn matches(&self, uri: &str) -> bool {
        let Some(parts) = &self.parts else {
            return false;
        };
        let uri = uri.as_bytes();
        // reach[p]: the parts so far can produce exactly uri[..p].
        let mut reach = vec![false; uri.len() + 1];
        let mut next = vec![false; uri.len() + 1];
        reach[0] = true;
        for part in parts.iter() {
            next.iter_mut().for_each(|r| *r = false);
            let mut any = false;
            match part {
                Part::Literal(text) => {
                    let text = text.as_bytes();
                    for p in 0..reach.len() {
                        if reach[p] && uri[p..].starts_with(text) {
                            next[p + text.len()] = true;
                            any = true;
                        }
                    }
                }
                Part::Var { reserved } => {
                    // A variable extends any reachable position by one or more allowed bytes
                    // (the excluded characters are ASCII, so a UTF-8 sequence never holds one).
                    let mut open = false;
                    for q in 0..uri.len() {
                        open |= reach[q];
                        if excluded(uri[q], *reserved) {
                            open = false;
                        } else if open {
                            next[q + 1] = true;
                            any = true;
                        }
                    }
                }
            }
            if !any {
                return false;
            }
            std::mem::swap(&mut reach, &mut next);
        }
        reach[uri.len()]
    }
}

fn excluded(byte: u8, reserved: bool) -> bool {
    matches!(byte, b'?' | b'#' | b'{' | b'}') || (!reserved && byte == b'/')
}

/// The parts of a template, or `None` for syntax this matcher does not support.
fn parse(text: &str) -> Option<Box<[Part]>> {
    let mut parts = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            Some(0) => {
                let close = rest.find('}')?;
                let expression = rest.get(1..close)?;
                let (reserved, name) = match expression.strip_prefix('+') {
                    Some(name) => (true, name),
                    None => (false, expression),
                };
                let valid_name = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'%');
                if !valid_name || name.starts_with('.') {
                    return None;
                }
                // Two variables side by side cannot be told apart: refused.
                if matches!(parts.last(), Some(Part::Var { .. })) {
                    return None;
                }
                parts.push(Part::Var { reserved });
                rest = &rest[close + 1..];
            }
            Some(i) if rest.as_bytes()[i] == b'}' => return None,
            Some(i) => {
                parts.push(Part::Literal(rest[..i].into()));
                rest = &rest[i..];
            }
            None => {
                parts.push(Part::Literal(rest.into()));
                rest = "";
            }
        }
    }
    Some(parts.into_boxed_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simple_variable_stands_for_one_path_segment() {
        let t = UriTemplate::new("projects://{id}/readme");
        assert!(t.matches("projects://apollo/readme"));
        assert!(t.matches("projects://a%2Fb/readme"));
        assert!(t.matches("projects://ap\u{f6}llo/readme"));
        for other in [
            "projects:///readme",
            "projects://a/b/readme",
            "projects://apollo/readme/",
            "projects://apollo/readme?x",
            "projects://apollo/readme#x",
            "projects://apollo/README",
            "projects://apollo",
            "",
            "xprojects://apollo/readme",
        ] {
            assert!(!t.matches(other), "{other}");
        }
    }

    #[test]
    fn a_reserved_variable_may_hold_slashes() {
        let t = UriTemplate::new("file:///{+path}");
        assert!(t.matches("file:///a/b/c.txt"));
        assert!(!t.matches("file:///"));
        assert!(!t.matches("file:///a?b"));
        let two = UriTemplate::new("repo://{owner}/{name}/files/{+path}");
        assert!(two.matches("repo://o/n/files/src/lib.rs"));
        assert!(!two.matches("repo://o/x/n/files/src/lib.rs"));
        let inner = UriTemplate::new("x://{a}-{b}");
        assert!(inner.matches("x://1-2-3"), "ambiguous splits are tried");
        assert!(!inner.matches("x://12"));
    }

    #[test]
    fn literal_templates_match_only_themselves() {
        let t = UriTemplate::new("docs://guide");
        assert!(t.matches("docs://guide"));
        assert!(!t.matches("docs://guides"));
    }

    #[test]
    fn other_syntax_matches_nothing() {
        for text in [
            "search://items{?q}",
            "x://{/path}",
            "x://{a,b}",
            "x://{a*}",
            "x://{a:3}",
            "x://{#f}",
            "x://{a",
            "x://a}",
            "x://{}",
            "x://{a}{b}",
        ] {
            let t = UriTemplate::new(text);
            assert_eq!(t.text(), text);
            assert!(!t.matches(text), "{text}");
            assert!(!t.matches("x://1"), "{text}");
        }
    }
}
