//! A tiny RESP2 client over a raw socket: what an attacker with access to Redis (or an
//! operator) would type, byte for byte, with no client library in between. Also a channel
//! capture that records every message published on the fleet's notice channels.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resp {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Resp>>),
}

impl Resp {
    /// The bytes of a bulk string.
    pub fn bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }

    /// A bulk or simple string as text.
    pub fn text(&self) -> Option<String> {
        match self {
            Resp::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Resp::Simple(s) => Some(s.clone()),
            _ => None,
        }
    }

    /// The items of an array.
    pub fn items(&self) -> &[Resp] {
        match self {
            Resp::Array(Some(items)) => items,
            _ => &[],
        }
    }
}

/// Reads one reply.
pub fn read(reader: &mut impl BufRead) -> std::io::Result<Resp> {
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(line.len().min(1));
    let number = || rest.parse::<i64>().map_err(|e| std::io::Error::other(e.to_string()));
    Ok(match kind {
        "+" => Resp::Simple(rest.to_owned()),
        "-" => Resp::Error(rest.to_owned()),
        ":" => Resp::Int(number()?),
        "$" => {
            let len = number()?;
            if len < 0 {
                Resp::Bulk(None)
            } else {
                let mut bytes = vec![0u8; usize::try_from(len).unwrap_or(0) + 2];
                reader.read_exact(&mut bytes)?;
                bytes.truncate(bytes.len() - 2);
                Resp::Bulk(Some(bytes))
            }
        }
        "*" => {
            let len = number()?;
            if len < 0 {
                Resp::Array(None)
            } else {
                let mut items = Vec::new();
                for _ in 0..len {
                    items.push(read(reader)?);
                }
                Resp::Array(Some(items))
            }
        }
        other => return Err(std::io::Error::other(format!("not RESP: {other}{rest}"))),
    })
}

/// A command as RESP.
pub fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    request
}

/// One command on a fresh connection to `port`.
pub fn call(port: u16, args: &[&[u8]]) -> std::io::Result<Resp> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(&encode(args))?;
    read(&mut BufReader::new(stream))
}

/// A captured message: its channel and payload.
pub type Message = (String, Vec<u8>);

/// Every message published on channels matching a pattern, from the moment it started.
pub struct Capture {
    messages: Arc<Mutex<Vec<Message>>>,
}

impl Capture {
    /// Subscribes to `pattern` on the Redis at `port` (in a thread) and records what comes.
    pub fn start(port: u16, pattern: &str) -> Capture {
        let messages = Arc::new(Mutex::new(Vec::new()));
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .write_all(&encode(&[b"PSUBSCRIBE", pattern.as_bytes()]))
            .expect("subscribe");
        let mut reader = BufReader::new(stream);
        let confirmed = read(&mut reader).expect("subscribed");
        assert_eq!(
            confirmed.items().first().and_then(Resp::text).as_deref(),
            Some("psubscribe")
        );
        let sink = Arc::clone(&messages);
        std::thread::spawn(move || {
            while let Ok(message) = read(&mut reader) {
                let items = message.items();
                if let (Some(channel), Some(payload)) =
                    (items.get(2).and_then(Resp::text), items.get(3).and_then(Resp::bytes))
                {
                    sink.lock().expect("lock").push((channel, payload.to_vec()));
                }
            }
        });
        Capture { messages }
    }

    /// What was captured so far.
    pub fn messages(&self) -> Vec<Message> {
        self.messages.lock().expect("lock").clone()
    }
}
