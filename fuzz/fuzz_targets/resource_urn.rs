//! `ResourceUrn::parse` and its `Display`.
//!
//! * `Display` gives back exactly the input, for every input (the URN is kept as sent).
//! * A typed variant only for `urn:wacht:{user|organization|workspace}:<ASCII digits>` whose
//!   number fits an `i64`, with that number as id; everything else is `Other(input)`.
//! * `parse(display(x)) == x`; `Serialize` writes the `Display` text; the accessors agree with
//!   the variant.
//!
//! Finding, fixed (`fuzz/regressions/resource_urn/`): an id with leading zeros
//! (`urn:wacht:user:007`) used to parse to the typed variant and display canonically
//! (`urn:wacht:user:7`). Only canonical decimal ids (`0`, or no leading zero) are typed now.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_wacht::ResourceUrn;

/// Independent reading of the grammar: `(kind, id)` for the three typed forms.
fn reference(s: &str) -> Option<(&'static str, i64)> {
    let rest = s.strip_prefix("urn:wacht:")?;
    let colon = rest.find(':')?;
    let (kind, digits) = (&rest[..colon], &rest[colon + 1..]);
    let kind = match kind {
        "user" => "user",
        "organization" => "organization",
        "workspace" => "workspace",
        _ => return None,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    let mut id: i64 = 0;
    for b in digits.bytes() {
        id = id.checked_mul(10)?.checked_add(i64::from(b - b'0'))?;
    }
    Some((kind, id))
}

fn check(input: &str) {
    let urn = ResourceUrn::parse(input);
    assert_eq!(urn.to_string(), input, "Display does not give back the input: {urn:?}");
    assert_eq!(
        input.parse::<ResourceUrn>().ok().as_ref(),
        Some(&urn),
        "FromStr differs from parse"
    );

    let typed = match &urn {
        ResourceUrn::User(id) => Some(("user", id.get())),
        ResourceUrn::Organization(id) => Some(("organization", id.get())),
        ResourceUrn::Workspace(id) => Some(("workspace", id.get())),
        ResourceUrn::Other(raw) => {
            assert_eq!(&**raw, input, "Other does not keep the input verbatim");
            None
        }
        _ => unreachable!("a ResourceUrn variant this target does not know"),
    };
    assert_eq!(typed, reference(input), "{input:?} parsed as {urn:?}");
    assert_eq!(
        urn.user().map(|i| i.get()),
        typed.filter(|t| t.0 == "user").map(|t| t.1)
    );
    assert_eq!(
        urn.organization().map(|i| i.get()),
        typed.filter(|t| t.0 == "organization").map(|t| t.1)
    );
    assert_eq!(
        urn.workspace().map(|i| i.get()),
        typed.filter(|t| t.0 == "workspace").map(|t| t.1)
    );

    let shown = urn.to_string();
    assert_eq!(ResourceUrn::parse(&shown), urn, "parse(display(x)) != x");
    let json = serde_json::to_string(&urn).expect("serialize");
    assert_eq!(serde_json::from_str::<String>(&json).expect("a JSON string"), shown);
}

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(s) => check(s),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});
