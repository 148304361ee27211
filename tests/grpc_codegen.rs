//! The Rust code committed under `examples/generated/` is exactly what `proto/` generates.
//!
//! Generation is pure Rust: `protox` parses the `.proto` files into a `FileDescriptorSet` and
//! `tonic-prost-build` turns that into prost messages plus tonic client and server code. No
//! `protoc` and no build script are involved, so this test proves generation works on a clean
//! machine, and users of the published crate never compile a protobuf toolchain.
//!
//! After editing anything under `proto/` (or upgrading prost / tonic), regenerate with:
//!
//! ```text
//! UPDATE_GENERATED=1 cargo test --all-features --test grpc_codegen
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

fn proto_dir() -> PathBuf {
    Path::new(MANIFEST_DIR).join("proto")
}

fn committed_dir() -> PathBuf {
    Path::new(MANIFEST_DIR).join("examples").join("generated")
}

/// Every `.proto` file under `dir`, as a path relative to `dir` (how imports name it), sorted.
fn protos(dir: &Path) -> io::Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, out)?;
            } else if path.extension().is_some_and(|e| e == "proto")
                && let Ok(relative) = path.strip_prefix(root)
            {
                out.push(relative.to_owned());
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Generates the Rust code for every `.proto` file into `out_dir` (one file per package,
/// e.g. `greeter.v1.rs`) and returns the generated file names, sorted.
fn generate(out_dir: &Path) -> Result<Vec<String>, Box<dyn std::error::Error>> {
    let files = protos(&proto_dir())?;
    assert!(!files.is_empty(), "no .proto files under {}", proto_dir().display());
    let fds = protox::compile(&files, [proto_dir()])?;
    fs::create_dir_all(out_dir)?;
    tonic_prost_build::configure()
        .out_dir(out_dir)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    let mut names = rust_files(out_dir)?;
    names.sort();
    Ok(names)
}

fn rust_files(dir: &Path) -> io::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".rs") {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[test]
fn committed_grpc_code_matches_the_protos() {
    let scratch = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("grpc_codegen-{}", std::process::id()));
    let _ = fs::remove_dir_all(&scratch);
    let generated = generate(&scratch).expect("protox + tonic-prost-build generate the gRPC code (no protoc needed)");
    assert!(!generated.is_empty(), "nothing was generated");

    let committed = committed_dir();
    let update = std::env::var_os("UPDATE_GENERATED").is_some_and(|v| v == "1");
    if update {
        fs::create_dir_all(&committed).expect("create examples/generated");
        for name in rust_files(&committed).expect("list examples/generated") {
            if !generated.contains(&name) {
                fs::remove_file(committed.join(&name)).expect("remove a stale generated file");
            }
        }
        for name in &generated {
            fs::copy(scratch.join(name), committed.join(name)).expect("write the generated file");
        }
    }

    let mut problems = Vec::new();
    for name in &generated {
        let fresh = fs::read_to_string(scratch.join(name)).expect("read the fresh file");
        match fs::read_to_string(committed.join(name)) {
            Ok(old) if old == fresh => {}
            Ok(_) => problems.push(format!("examples/generated/{name} differs from what proto/ generates")),
            Err(_) => problems.push(format!("examples/generated/{name} is missing")),
        }
    }
    for name in rust_files(&committed).unwrap_or_default() {
        if !generated.contains(&name) {
            problems.push(format!(
                "examples/generated/{name} is stale: no .proto generates it any more"
            ));
        }
    }
    let _ = fs::remove_dir_all(&scratch);
    assert!(
        problems.is_empty(),
        "{}\n\nThe committed gRPC code is out of date. Regenerate it (pure Rust, no protoc needed) with\n\n    \
         UPDATE_GENERATED=1 cargo test --all-features --test grpc_codegen\n\nthen review and commit examples/generated/.",
        problems.join("\n")
    );
}
