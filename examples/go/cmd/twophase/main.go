// Two-phase: join the queue without blocking, do other work, then wait.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/dflockd/libdflockd/examples/go/internal/exampleenv"
)

func main() {
	client, _, cleanup, err := exampleenv.Setup(false)
	exampleenv.Must("setup", err)
	defer cleanup()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	const key = "go-example-two-phase"
	holder, err := client.Lock(key)
	exampleenv.Must("lock handle", err)
	defer holder.Close(context.Background())
	waiter, err := client.Lock(key)
	exampleenv.Must("lock handle", err)
	defer waiter.Close(context.Background())

	acquired, err := holder.Enqueue(ctx)
	exampleenv.Must("holder enqueue", err)
	fmt.Println("holder: acquired at once:", acquired)

	acquired, err = waiter.Enqueue(ctx) // phase 1: returns at once
	exampleenv.Must("waiter enqueue", err)
	fmt.Println("waiter: acquired at once:", acquired, "(queued)")
	fmt.Println("waiter: doing other work while queued")

	go func() {
		time.Sleep(100 * time.Millisecond)
		exampleenv.Must("holder release", holder.Release(ctx))
		fmt.Println("holder: released")
	}()
	exampleenv.Must("waiter wait", waiter.Wait(ctx)) // phase 2
	fence, err := waiter.Fence()
	exampleenv.Must("fence", err)
	fmt.Printf("waiter: granted, fence %d\n", fence)
	exampleenv.Must("waiter release", waiter.Release(ctx))
}
