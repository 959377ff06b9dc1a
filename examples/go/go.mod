module github.com/dflockd/libdflockd/examples/go

go 1.19
