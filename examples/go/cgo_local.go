//go:build dflockd_local

package dflockd

// In-repository build (-tags dflockd_local; `make test-go` passes it): link
// the library built in this repository (`make lib` stages build/lib with the
// SONAME link libdflockd.so.0, which a bare target/debug lacks) and find it
// at run time through an rpath, so no LD_LIBRARY_PATH is needed. The default
// build (cgo_pkgconfig.go) uses the installed library through pkg-config.

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #cgo LDFLAGS: -L${SRCDIR}/../../build/lib -ldflockd -Wl,-rpath,${SRCDIR}/../../build/lib
import "C"

// buildTags are the tags this package was built with, for the tests that
// build the programs in cmd/ the same way.
const buildTags = "dflockd_local"
