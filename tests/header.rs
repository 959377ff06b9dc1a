//! `include/dflockd.h` is generated from src/ffi/ by cbindgen and committed.
//! This test regenerates it and fails on any difference, so the header can
//! never drift from the code. `DFLOCKD_BLESS=1 cargo test --test header`
//! rewrites it after an intended change to the C API.

use std::path::Path;

fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(root.join("cbindgen.toml")).expect("cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(root.join("src/lib.rs"))
        .generate()
        .expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

#[test]
fn header_matches_the_code() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/dflockd.h");
    let fresh = generate();
    if std::env::var_os("DFLOCKD_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &fresh).expect("write include/dflockd.h");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let line = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .map_or(committed.lines().count().min(fresh.lines().count()) + 1, |i| {
                i + 1
            });
        panic!(
            "include/dflockd.h is out of date (first difference at line {line}); \
             run `DFLOCKD_BLESS=1 cargo test --test header` and commit the result"
        );
    }
}

#[test]
fn header_version_macros_match_cargo_toml() {
    let header = generate();
    for (name, value) in [
        ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define DFLOCKD_VERSION_{name} {value}");
        assert!(header.contains(&line), "header lacks `{line}`");
    }
}
