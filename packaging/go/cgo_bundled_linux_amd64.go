//go:build !dynamic

package dflockd

// Release tree only (`make dist` copies this file into dist/libdflockd-go-X.Y.Z/,
// beside lib/libdflockd_glibc_linux_amd64.a and include/; the repository has no
// such archive): the default build on linux/amd64 links the prebuilt static
// libdflockd (glibc >= 2.17, the build of `make dist`), so `go build` needs no
// installed library and no Rust toolchain, as confluent-kafka-go does with
// librdkafka. -tags dynamic links the installed shared library through
// pkg-config instead (cgo_pkgconfig.go); other platforms always do.
// The system libraries are the static library's (README.md "Static linking").

// #cgo CFLAGS: -I${SRCDIR}/include
// #cgo LDFLAGS: ${SRCDIR}/lib/libdflockd_glibc_linux_amd64.a -lgcc_s -lutil -lrt -lpthread -lm -ldl
import "C"

// buildTags are the tags this package was built with, for the tests that
// build the programs in cmd/ the same way.
const buildTags = ""
