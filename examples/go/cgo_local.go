//go:build !dflockd_pkgconfig

package dflockd

// Default build: link the library built in this repository (`make lib` stages
// build/lib/libdflockd.so with its SONAME link libdflockd.so.0, which a bare
// target/debug lacks) and find it at run time through an rpath, so no
// LD_LIBRARY_PATH is needed. Build with -tags dflockd_pkgconfig to use an
// installed library through pkg-config instead.

// #cgo CFLAGS: -I${SRCDIR}/../../include
// #cgo LDFLAGS: -L${SRCDIR}/../../build/lib -ldflockd -Wl,-rpath,${SRCDIR}/../../build/lib
import "C"
