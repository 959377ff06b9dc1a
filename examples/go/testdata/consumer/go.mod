// A program outside the module, importing it by its published path: `make
// test-go` builds it with the default (pkg-config) build against an installed
// library. The replace points at this checkout instead of the network.
module example.com/consumer

go 1.19

require github.com/dflockd/libdflockd/examples/go v0.0.0

replace github.com/dflockd/libdflockd/examples/go => ../..
