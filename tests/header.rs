//! The C headers are generated from src/ffi/ by cbindgen and committed:
//! `include/dflockd.h` (the client API) and `include/dflockd_testserver.h`
//! (the embedded test server's API, `src/ffi/testserver.rs`, which a
//! production build may leave out). This test regenerates both and fails
//! on any difference, so the headers can never drift from the code.
//! `DFLOCKD_BLESS=1 cargo test --test header` rewrites them after an
//! intended change to the C API. It also checks that every public name in
//! them carries the library's prefix.

use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config() -> cbindgen::Config {
    cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml parses")
}

fn render(config: cbindgen::Config, srcs: &[PathBuf]) -> String {
    let mut builder = cbindgen::Builder::new().with_config(config);
    for src in srcs {
        builder = builder.with_src(src);
    }
    let bindings = builder.generate().expect("cbindgen generates the header");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("header is UTF-8")
}

/// The test server's header: only src/ffi/testserver.rs and
/// src/ffi/testcluster.rs (the cluster double), on top of dflockd.h (for
/// dflockd_status and dflockd_error).
fn testserver_header() -> String {
    let mut c = config();
    c.include_guard = Some("DFLOCKD_TESTSERVER_H".into());
    c.includes = vec!["dflockd.h".into()];
    c.header = Some(
        "/**\n * @file dflockd_testserver.h\n * @brief The embedded dflockd test server, for your own tests \
         (a test double,\n * not a production server). Conventions as in dflockd.h. Present when\n * \
         libdflockd was built with the `test-server` feature (the default).\n */"
            .into(),
    );
    render(
        c,
        &[
            root().join("src/ffi/testserver.rs"),
            root().join("src/ffi/testcluster.rs"),
        ],
    )
}

/// The test server's and cluster's prefixes.
const TEST_PREFIXES: [&str; 2] = ["dflockd_testserver", "dflockd_testcluster"];

/// Identifiers beginning with `dflockd_testserver` or `dflockd_testcluster`
/// in `text`.
fn testserver_names(text: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for prefix in TEST_PREFIXES {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The client header: the whole crate minus the test server's items.
fn client_header(testserver: &str) -> String {
    let mut c = config();
    c.export.exclude = testserver_names(testserver);
    render(c, &[root().join("src/lib.rs")])
}

fn check(path: &str, fresh: &str) {
    let path = root().join(path);
    if std::env::var_os("DFLOCKD_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, fresh).expect("write the header");
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
            "{} is out of date (first difference at line {line}); \
             run `DFLOCKD_BLESS=1 cargo test --test header` and commit the result",
            path.display()
        );
    }
}

#[test]
fn headers_match_the_code() {
    let ts = testserver_header();
    check("include/dflockd_testserver.h", &ts);
    check("include/dflockd.h", &client_header(&ts));
}

#[test]
fn the_client_header_has_no_test_server_item() {
    let ts = testserver_header();
    let client = client_header(&ts);
    let leaked: Vec<_> = declared_names(&client)
        .into_iter()
        .filter(|n| TEST_PREFIXES.iter().any(|p| n.starts_with(p)))
        .collect();
    assert!(leaked.is_empty(), "test server items in dflockd.h: {leaked:?}");
    assert!(ts.contains("dflockd_testserver_start"));
    assert!(ts.contains("dflockd_testcluster_start"));
}

/// Every name a header declares: macros, typedefs, enum constants,
/// functions, struct tags.
fn declared_names(header: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_comment = false;
    let mut in_enum = false;
    for raw in header.lines() {
        let line = raw.trim();
        if in_comment {
            in_comment = !line.contains("*/");
            continue;
        }
        if line.starts_with("/*") {
            in_comment = !line.contains("*/");
            continue;
        }
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        };
        if let Some(rest) = line.strip_prefix("#define ") {
            names.push(ident(rest));
        } else if line.starts_with("typedef enum") {
            in_enum = true;
        } else if in_enum {
            if let Some(rest) = line.strip_prefix("} ") {
                names.push(ident(rest));
                in_enum = false;
            } else if !line.is_empty() && line != "{" {
                names.push(ident(line));
            }
        } else if let Some(rest) = line.strip_prefix("} ") {
            names.push(ident(rest));
        } else if line.starts_with("typedef") {
            // typedef struct x x;  typedef void (*name)(...);  typedef T name;
            let name = if let Some(i) = line.find("(*") {
                ident(&line[i + 2..])
            } else {
                let body = line.trim_end_matches(';');
                ident(body.rsplit(' ').next().unwrap_or(""))
            };
            names.push(name);
        } else if let Some(i) = line.find('(') {
            if !raw.starts_with(' ') && !line.starts_with('#') && !line.starts_with("extern") {
                let before = line[..i].trim_end();
                let name = before.rsplit([' ', '*']).next().unwrap_or("");
                names.push(ident(name));
            }
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

#[test]
fn every_public_name_carries_the_prefix() {
    let ts = testserver_header();
    let client = client_header(&ts);
    for (file, text) in [("dflockd.h", &client), ("dflockd_testserver.h", &ts)] {
        let names = declared_names(text);
        assert!(names.len() > 20, "{file}: found only {names:?}");
        let bad: Vec<_> = names
            .iter()
            .filter(|n| !(n.starts_with("DFLOCKD_") || n.starts_with("dflockd_")))
            .collect();
        assert!(
            bad.is_empty(),
            "{file}: names without the DFLOCKD_/dflockd_ prefix: {bad:?}"
        );
    }
}

#[test]
fn header_version_macros_match_cargo_toml() {
    let header = client_header(&testserver_header());
    for (name, value) in [
        ("MAJOR", env!("CARGO_PKG_VERSION_MAJOR")),
        ("MINOR", env!("CARGO_PKG_VERSION_MINOR")),
        ("PATCH", env!("CARGO_PKG_VERSION_PATCH")),
    ] {
        let line = format!("#define DFLOCKD_VERSION_{name} {value}");
        assert!(header.contains(&line), "header lacks `{line}`");
    }
}
