//! Library version, at compile time (header macros) and at run time.
//!
//! cbindgen cannot evaluate `env!`, so the numbers are literals here; the
//! test below keeps them equal to Cargo.toml and the header test keeps the
//! header equal to them.

use std::ffi::c_char;

/// Major version of the headers you compiled against.
pub const DFLOCKD_VERSION_MAJOR: u32 = 0;
/// Minor version of the headers you compiled against.
pub const DFLOCKD_VERSION_MINOR: u32 = 1;
/// Patch version of the headers you compiled against.
pub const DFLOCKD_VERSION_PATCH: u32 = 0;
/// `(MAJOR << 16) | (MINOR << 8) | PATCH`, e.g. 0x000100 for 0.1.0, so
/// versions compare with `<` (as libcurl's `LIBCURL_VERSION_NUM`). Compare
/// with `dflockd_version_number()` to detect a header/library mismatch.
pub const DFLOCKD_VERSION_NUMBER: u32 =
    (DFLOCKD_VERSION_MAJOR << 16) | (DFLOCKD_VERSION_MINOR << 8) | DFLOCKD_VERSION_PATCH;

// The number packs minor and patch into 8 bits each.
const _: () = assert!(DFLOCKD_VERSION_MINOR < 256 && DFLOCKD_VERSION_PATCH < 256);

/// The version of the loaded library as a static NUL-terminated string,
/// e.g. `"0.1.0"`. Never NULL; lives forever; thread-safe.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_version() -> *const c_char {
    const V: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");
    V.as_ptr().cast()
}

/// The version of the loaded library as `DFLOCKD_VERSION_NUMBER` encodes
/// it. Thread-safe.
///
/// No network I/O; returns at once.
#[unsafe(no_mangle)]
pub extern "C" fn dflockd_version_number() -> u32 {
    DFLOCKD_VERSION_NUMBER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants_match_cargo_toml() {
        let n = |s: &str| s.parse::<u32>().unwrap();
        assert_eq!(DFLOCKD_VERSION_MAJOR, n(env!("CARGO_PKG_VERSION_MAJOR")));
        assert_eq!(DFLOCKD_VERSION_MINOR, n(env!("CARGO_PKG_VERSION_MINOR")));
        assert_eq!(DFLOCKD_VERSION_PATCH, n(env!("CARGO_PKG_VERSION_PATCH")));
        let v = unsafe { std::ffi::CStr::from_ptr(dflockd_version()) };
        assert_eq!(v.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
        assert_eq!(
            dflockd_version_number(),
            0x000100 * DFLOCKD_VERSION_MINOR + (DFLOCKD_VERSION_MAJOR << 16) + DFLOCKD_VERSION_PATCH
        );
    }
}
