// Lock: acquire a lock with a context deadline, print its fence, release.
package main

import (
	"context"
	"fmt"
	"time"

	dflockd "github.com/dflockd/libdflockd/examples/go"
	"github.com/dflockd/libdflockd/examples/go/internal/exampleenv"
)

func main() {
	client, _, cleanup, err := exampleenv.Setup(false)
	exampleenv.Must("setup", err)
	defer cleanup()

	// One context bounds the whole example; every call that talks to the
	// server takes it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	lock, err := client.Lock("go-example-lock")
	exampleenv.Must("lock handle", err)
	defer lock.Close(context.Background()) // releases if still held; bounded by the I/O timeout

	exampleenv.Must("acquire", lock.Acquire(ctx))
	fence, err := lock.Fence()
	exampleenv.Must("fence", err)
	// Pass the fence with every write to the guarded resource.
	fmt.Printf("acquired go-example-lock, fence %d\n", fence)
	exampleenv.Must("release", lock.Release(ctx))
	fmt.Println("released")
	fmt.Println("library", dflockd.Version())
}
