// Lost lease: hold a lock, stop work when the lease is lost. The loss is
// forced with the embedded server's fault controls (it drops every
// connection, which releases the lock server-side), so this example always
// uses the embedded server.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	dflockd "github.com/dflockd/libdflockd/examples/go"
	"github.com/dflockd/libdflockd/examples/go/internal/exampleenv"
)

func main() {
	// Renew (and so notice trouble) every 100 ms instead of every 10 s.
	client, srv, cleanup, err := exampleenv.SetupEmbedded(false, dflockd.WithKeepalive(100*time.Millisecond))
	exampleenv.Must("setup", err)
	defer cleanup()

	lock, err := client.Lock("go-example-lost")
	exampleenv.Must("lock handle", err)
	defer lock.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exampleenv.Must("acquire", lock.Acquire(ctx))
	fmt.Println("acquired; working until the lease is lost")

	exampleenv.Must("drop connections", srv.DropConnections()) // the fault

	work := time.NewTicker(50 * time.Millisecond)
	defer work.Stop()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case <-lock.Lost():
			fmt.Println("lease lost: stopping work; held =", lock.Held())
			err := lock.Release(ctx)
			fmt.Printf("release after loss: %v (ErrLeaseLost: %v)\n", err, errors.Is(err, dflockd.ErrLeaseLost))
			return
		case <-work.C:
			// one unit of work, guarded by the lease
		case <-deadline:
			fmt.Println("the lease was not reported lost within 10 s")
			os.Exit(1)
		}
	}
}
