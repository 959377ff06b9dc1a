//go:build !dflockd_local

package dflockd

// Default build: the installed library (`make release && make install`, or a
// distribution package) through pkg-config, which must find dflockd.pc (set
// PKG_CONFIG_PATH for a non-standard prefix). The program then loads
// libdflockd.so.0 through the system loader: a prefix outside its search
// path needs LD_LIBRARY_PATH, ldconfig, or CGO_LDFLAGS=-Wl,-rpath,<libdir>. Build with
// -tags dflockd_local to link the repository's build/lib instead. In the release
// tree (`make dist`, packaging/go/) this file becomes the -tags dynamic build.

// #cgo pkg-config: dflockd
import "C"

// buildTags are the tags this package was built with, for the tests that
// build the programs in cmd/ the same way.
const buildTags = ""
