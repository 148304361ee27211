//! Server-sent events, read as a client reads them (the WHATWG event stream rules): lines end
//! with CRLF, LF or CR; an empty line ends an event; a `data` field's value loses one leading
//! space and the values of an event's `data` lines are joined with LF; a UTF-8 byte order mark
//! at the start of the stream is skipped; an event the stream ends in the middle of is never
//! dispatched.
//!
//! [`Events`] cuts a byte stream into whole events, keeping each one's bytes as sent; an event
//! is released as soon as its empty line arrives, so nothing waits for the stream's end.
//! [`rewrite`] gives an event's data to a function and, when the function replaces it, writes
//! the event again with the new data and every other line as it was.

use std::borrow::Cow;

/// Bytes of a stream, cut into events.
#[derive(Debug, Default)]
pub(crate) struct Events {
    /// The current event's bytes so far.
    buf: Vec<u8>,
    /// Where scanning for line ends resumes.
    pos: usize,
    /// Where the current line starts.
    line_start: usize,
}

impl Events {
    /// Bytes held for an event not yet ended.
    pub(crate) fn held(&self) -> usize {
        self.buf.len()
    }

    /// Takes `chunk` in and hands each event it completes to `each` (its lines and the empty
    /// line that ends it, as sent), in order, until `each` returns `false`.
    pub(crate) fn push(&mut self, chunk: &[u8], mut each: impl FnMut(&[u8]) -> bool) {
        self.buf.extend_from_slice(chunk);
        loop {
            let Some(offset) = self.buf[self.pos..].iter().position(|&b| b == b'\r' || b == b'\n') else {
                self.pos = self.buf.len();
                return;
            };
            let at = self.pos + offset;
            let end = match (self.buf[at], self.buf.get(at + 1)) {
                (b'\r', Some(b'\n')) => at + 2,
                // A CR last in the buffer may be the first half of a CRLF: wait for more.
                (b'\r', None) => {
                    self.pos = at;
                    return;
                }
                _ => at + 1,
            };
            let empty = at == self.line_start;
            self.pos = end;
            self.line_start = end;
            if empty {
                let event: Vec<u8> = self.buf.drain(..end).collect();
                self.pos = 0;
                self.line_start = 0;
                if !each(&event) {
                    return;
                }
            }
        }
    }
}

/// The UTF-8 byte order mark a stream may start with.
pub(crate) const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One line of an event: its content and its line end.
fn lines(event: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    let mut rest = event;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let at = rest
            .iter()
            .position(|&b| b == b'\r' || b == b'\n')
            .unwrap_or(rest.len());
        let end = match (rest.get(at), rest.get(at + 1)) {
            (Some(b'\r'), Some(b'\n')) => at + 2,
            (Some(_), _) => at + 1,
            (None, _) => at,
        };
        let line = (&rest[..at], &rest[at..end]);
        rest = &rest[end..];
        Some(line)
    })
}

/// The value of a `data` line, or `None` for any other line.
fn data_value(line: &[u8]) -> Option<&[u8]> {
    let value = match line.iter().position(|&b| b == b':') {
        Some(colon) if &line[..colon] == b"data" => &line[colon + 1..],
        None if line == b"data" => &[][..],
        _ => return None,
    };
    Some(value.strip_prefix(b" ").unwrap_or(value))
}

/// The event with its data replaced by what `replace` returns for it, or `None` when it
/// keeps its data (no data, or `replace` returns `None`). `event` holds one whole event (see
/// [`Events::push`]); a byte order mark before it (the stream's first event) is kept and not
/// read as part of the first field's name. Data that is not UTF-8 is read as a client reads
/// it, with U+FFFD in place of each bad sequence.
pub(crate) fn rewrite(event: &[u8], replace: impl FnOnce(&str) -> Option<String>) -> Option<Vec<u8>> {
    let (bom, body) = match event.strip_prefix(BOM) {
        Some(body) => (BOM, body),
        None => (&[][..], event),
    };
    let mut data: Vec<u8> = Vec::new();
    let mut any = false;
    for (line, _) in lines(body) {
        if let Some(value) = data_value(line) {
            if any {
                data.push(b'\n');
            }
            data.extend_from_slice(value);
            any = true;
        }
    }
    if !any {
        return None;
    }
    let text: Cow<'_, str> = String::from_utf8_lossy(&data);
    let new = replace(&text)?;
    let mut out = Vec::with_capacity(event.len());
    out.extend_from_slice(bom);
    let mut written = false;
    for (line, end) in lines(body) {
        if data_value(line).is_none() {
            out.extend_from_slice(line);
            out.extend_from_slice(end);
        } else if !written {
            for piece in new.split('\n') {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(piece.as_bytes());
                out.push(b'\n');
            }
            written = true;
        }
    }
    Some(out)
}

/// One event carrying `data` (a line of JSON).
pub(crate) fn event(data: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 10);
    for piece in data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(piece.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut events = Events::default();
        let mut out = Vec::new();
        for chunk in chunks {
            events.push(chunk, |e| {
                out.push(e.to_vec());
                true
            });
        }
        out
    }

    #[test]
    fn events_end_at_an_empty_line_whatever_the_line_ends_and_chunks() {
        let stream = b"id: 1\ndata: a\n\nevent: x\r\ndata: b\r\n\r\ndata: c\r\rdata: d\r\n\ndata: tail";
        let expected: Vec<&[u8]> = vec![
            b"id: 1\ndata: a\n\n",
            b"event: x\r\ndata: b\r\n\r\n",
            b"data: c\r\r",
            b"data: d\r\n\n",
        ];
        assert_eq!(cut(&[stream]), expected);
        // Byte by byte: a CR at a chunk's end waits for the next byte.
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(cut(&bytes), expected);
        let mut events = Events::default();
        events.push(b"data: tail", |_| true);
        assert_eq!(events.held(), 10, "an unfinished event is held, never released");
    }

    #[test]
    fn data_is_read_as_a_client_reads_it_and_written_back_in_place() {
        let event = b": comment\nid: 7\ndata:{\"a\":\ndata:  1}\nretry: 5\n\n";
        let mut seen = String::new();
        let out = rewrite(event, |data| {
            seen = data.to_owned();
            Some("{\"b\":2}".into())
        })
        .expect("replaced");
        assert_eq!(seen, "{\"a\":\n 1}");
        assert_eq!(out, b": comment\nid: 7\ndata: {\"b\":2}\nretry: 5\n\n".to_vec());
        assert_eq!(rewrite(event, |_| None), None);
        assert_eq!(rewrite(b"id: 1\n\n", |_| Some("x".into())), None, "no data");
        let multi = rewrite(b"data\n\n", |d| {
            assert_eq!(d, "");
            Some("a\nb".into())
        });
        assert_eq!(multi.unwrap(), b"data: a\ndata: b\n\n".to_vec());
    }

    #[test]
    fn a_byte_order_mark_is_kept_but_not_read_as_a_field_name() {
        let event = b"\xEF\xBB\xBFdata: x\n\n";
        let out = rewrite(event, |d| {
            assert_eq!(d, "x");
            Some("y".into())
        });
        assert_eq!(out.unwrap(), b"\xEF\xBB\xBFdata: y\n\n".to_vec());
    }

    #[test]
    fn bad_utf8_reads_as_a_client_reads_it() {
        let out = rewrite(b"data: a\xFFb\n\n", |d| {
            assert_eq!(d, "a\u{fffd}b");
            Some(d.to_owned())
        });
        assert_eq!(out.unwrap(), "data: a\u{fffd}b\n\n".as_bytes().to_vec());
        assert_eq!(event("{}"), b"data: {}\n\n".to_vec());
    }
}
