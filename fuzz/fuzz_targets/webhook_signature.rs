//! `webhook-signature` parsing (`tower_wacht::webhooks::parse_signature_header`, what
//! `WachtWebhooks` reads before it computes any HMAC), in two modes picked by the input:
//!
//! * raw bytes as the header value (first byte < 0x80). Compared with an independent reading of
//!   the Standard Webhooks form: space-separated `<version>,<base64>` entries. `None` exactly
//!   when the value is over 4096 bytes, has a byte that is neither visible ASCII nor a space,
//!   has more than 16 entries, or an entry without a comma; otherwise `Some` of exactly the
//!   `v1` entries whose base64 (standard alphabet, the one `=` of padding optional, no
//!   non-zero trailing bits) is 32 bytes, decoded, in order.
//! * a list of signatures built with `arbitrary` (first byte >= 0x80): random 32-byte
//!   signatures under `v1` and other versions, padded or not, joined by one or more spaces;
//!   the parser gives back exactly the `v1` ones, in order.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tower_wacht::webhooks::parse_signature_header;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// The 32 bytes a canonical base64 text of them decodes to: 43 alphabet characters whose last
/// two bits are zero, then at most one `=`.
fn reference_decode(text: &[u8]) -> Option<[u8; 32]> {
    let chars = match text.len() {
        43 => text,
        44 if text[43] == b'=' => &text[..43],
        _ => return None,
    };
    let mut bits: u32 = 0;
    let mut n_bits = 0;
    let mut out = Vec::with_capacity(33);
    for &c in chars {
        let v = ALPHABET.iter().position(|&a| a == c)? as u32;
        bits = (bits << 6) | v;
        n_bits += 6;
        if n_bits >= 8 {
            n_bits -= 8;
            out.push((bits >> n_bits) as u8);
            bits &= (1 << n_bits) - 1;
        }
    }
    // 43 × 6 = 258 bits: 32 bytes and two bits left, which must be zero.
    if bits != 0 {
        return None;
    }
    out.try_into().ok()
}

fn reference(value: &[u8]) -> Option<Vec<[u8; 32]>> {
    if value.len() > 4096 || value.iter().any(|&b| !(b == b' ' || (0x21..=0x7e).contains(&b))) {
        return None;
    }
    let entries: Vec<&[u8]> = value.split(|&b| b == b' ').filter(|e| !e.is_empty()).collect();
    if entries.len() > 16 {
        return None;
    }
    let mut out = Vec::new();
    for entry in entries {
        let comma = entry.iter().position(|&b| b == b',')?;
        if &entry[..comma] == b"v1" {
            if let Some(signature) = reference_decode(&entry[comma + 1..]) {
                out.push(signature);
            }
        }
    }
    Some(out)
}

fn encode(bytes: &[u8; 32], padded: bool) -> String {
    let mut out = String::new();
    let mut bits: u32 = 0;
    let mut n_bits = 0;
    for &b in bytes {
        bits = (bits << 8) | u32::from(b);
        n_bits += 8;
        while n_bits >= 6 {
            n_bits -= 6;
            out.push(ALPHABET[((bits >> n_bits) & 63) as usize] as char);
        }
        bits &= (1 << n_bits) - 1;
    }
    out.push(ALPHABET[((bits << (6 - n_bits)) & 63) as usize] as char);
    if padded {
        out.push('=');
    }
    out
}

#[derive(Debug, Arbitrary)]
struct Entry {
    version: u8,
    signature: [u8; 32],
    padded: bool,
    spaces: u8,
}

fuzz_target!(|data: &[u8]| {
    match data.first() {
        Some(&first) if first >= 0x80 => {
            let mut u = Unstructured::new(&data[1..]);
            let Ok(entries) = Vec::<Entry>::arbitrary(&mut u) else { return };
            let entries = &entries[..entries.len().min(16)];
            let mut value = String::new();
            let mut expected = Vec::new();
            for entry in entries {
                let version = match entry.version % 4 {
                    0 | 1 => "v1",
                    2 => "v1a",
                    _ => "v2",
                };
                if version == "v1" {
                    expected.push(entry.signature);
                }
                value.push_str(&" ".repeat(usize::from(entry.spaces % 3)));
                value.push_str(&format!("{version},{}", encode(&entry.signature, entry.padded)));
                value.push(' ');
            }
            assert_eq!(reference(value.as_bytes()), Some(expected.clone()), "the reference disagrees: {value}");
            assert_eq!(parse_signature_header(value.as_bytes()), Some(expected), "{value}");
        }
        _ => {
            assert_eq!(parse_signature_header(data), reference(data), "{:?}", String::from_utf8_lossy(data));
        }
    }
});
