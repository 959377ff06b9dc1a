//go:build dflockd_pkgconfig

package dflockd

// #cgo pkg-config: dflockd
import "C"
