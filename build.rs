//! Link settings for the C library: the SONAME `libdflockd.so.MAJOR`, and a
//! version script so the shared library exports only `dflockd_*` symbols
//! (checked in CI with `nm -D --defined-only`).

fn main() {
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets CARGO_PKG_VERSION_MAJOR");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=dflockd.map");
    if target_os == "linux" {
        println!("cargo::rustc-cdylib-link-arg=-Wl,-soname,libdflockd.so.{major}");
        println!("cargo::rustc-cdylib-link-arg=-Wl,--version-script={dir}/dflockd.map");
    }
}
