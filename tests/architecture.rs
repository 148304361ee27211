//! The module dependency rules of `ARCHITECTURE.md`, checked on the source: each top-level
//! module of `src/` may name only the crate modules listed for it (code before its unit
//! tests; doc comments do not count). A new dependency either fits the map or changes it, in
//! `ARCHITECTURE.md` and here together.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → the crate modules it may use.
const ALLOWED: &[(&str, &[&str])] = &[
    ("body", &[]),
    ("json", &[]),
    ("error", &[]),
    ("telemetry", &[]),
    ("timefmt", &[]),
    ("token", &[]),
    ("api_key", &["error", "principal"]),
    ("change", &["principal", "token"]),
    ("scopes", &[]),
    ("route", &[]),
    ("audit", &["principal", "rate_limit", "reject", "route", "telemetry"]),
    ("rate_limit", &["principal", "token"]),
    ("reject", &["scopes"]),
    ("principal", &["reject", "scopes", "timefmt"]),
    ("metadata", &["error", "scopes"]),
    ("jwt", &["error", "json", "principal", "reject", "telemetry"]),
    ("api_key", &["error", "principal"]),
    (
        "config",
        &[
            "api_key",
            "audit",
            "error",
            "fleet",
            "jwt",
            "metadata",
            "principal",
            "rate_limit",
            "route",
            "scopes",
            "token",
        ],
    ),
    (
        "fleet",
        &["change", "error", "gateway", "principal", "telemetry", "token"],
    ),
    ("gateway", &["config", "error", "principal", "timefmt", "token"]),
    (
        "cache",
        &[
            "change",
            "config",
            "principal",
            "rate_limit",
            "reject",
            "scopes",
            "telemetry",
            "token",
        ],
    ),
    (
        "verify",
        &[
            "api_key",
            "audit",
            "cache",
            "change",
            "config",
            "fleet",
            "error",
            "gateway",
            "jwt",
            "principal",
            "rate_limit",
            "reject",
            "route",
            "scopes",
            "telemetry",
            "token",
        ],
    ),
    ("guard", &["body", "json", "principal", "reject", "telemetry"]),
    (
        "layer",
        &[
            "audit",
            "body",
            "change",
            "config",
            "cors",
            "error",
            "gateway",
            "metadata",
            "principal",
            "rate_limit",
            "reject",
            "route",
            "stepup",
            "token",
            "verify",
        ],
    ),
    ("axum", &["principal", "reject", "stepup"]),
    ("cors", &["body", "error"]),
    ("stepup", &["principal", "reject", "telemetry"]),
    ("webhooks", &["change", "error", "json", "layer", "telemetry", "verify"]),
    ("testing", &["jwt", "rate_limit"]),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The crate modules a file's code names (`crate::x`), before its unit tests.
fn named_modules(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut names = BTreeSet::new();
    for line in code.lines().map(str::trim_start).filter(|l| !l.starts_with("//")) {
        for (i, _) in line.match_indices("crate::") {
            let rest = &line[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                names.insert(name);
            }
        }
    }
    names
}

#[test]
fn every_module_uses_only_what_the_architecture_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.iter().next().and_then(|c| c.to_str()).unwrap_or_default();
        let module = first.trim_end_matches(".rs");
        if module == "lib" {
            continue;
        }
        let Some(may_use) = allowed.get(module) else {
            violations.push(format!("{}: module `{module}` is not in the map", relative.display()));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("source is readable");
        for used in named_modules(&text) {
            if used != module && !may_use.contains(&used.as_str()) {
                violations.push(format!("{}: `{module}` uses `crate::{used}`", relative.display()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "dependency rules broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_uses_and_paths_but_not_comments() {
    let text = "use crate::cache::Entry;\nlet x = crate::telemetry::refresh(\"a\");\n/// see [`X`](crate::layer::X)\n#[cfg(test)]\nuse crate::testing::FakeGateway;";
    let names: Vec<String> = named_modules(text).into_iter().collect();
    assert_eq!(names, ["cache", "telemetry"]);
}
