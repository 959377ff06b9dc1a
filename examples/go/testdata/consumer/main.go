// Consumer: lock and release on the embedded test server through the
// installed library; prints the library version and the fence.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	dflockd "github.com/dflockd/libdflockd/examples/go"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "consumer:", err)
		os.Exit(1)
	}
}

func run() error {
	srv, err := dflockd.StartTestServer(nil)
	if err != nil {
		return err
	}
	defer srv.Close()
	c, err := dflockd.NewClient(dflockd.WithServers(srv.Addr()))
	if err != nil {
		return err
	}
	defer c.Close()
	l, err := c.Lock("consumer")
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	defer l.Close(ctx)
	if err := l.Acquire(ctx); err != nil {
		return err
	}
	fence, err := l.Fence()
	if err != nil {
		return err
	}
	fmt.Printf("libdflockd %s: held with fence %d\n", dflockd.Version(), fence)
	return l.Release(ctx)
}
