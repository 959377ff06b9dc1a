// Semaphore: 6 workers share 2 slots; at most 2 run at once.
package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dflockd/libdflockd/examples/go/internal/exampleenv"
)

func main() {
	client, _, cleanup, err := exampleenv.Setup(false)
	exampleenv.Must("setup", err)
	defer cleanup()

	const key, limit, workers = "go-example-semaphore", 2, 6
	var inside, peak int32
	var wg sync.WaitGroup
	for w := 1; w <= workers; w++ {
		sem, err := client.Semaphore(key, limit) // one handle per holder
		exampleenv.Must("semaphore handle", err)
		defer sem.Close(context.Background())
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			exampleenv.Must("acquire", sem.Acquire(ctx))
			n := atomic.AddInt32(&inside, 1)
			for p := atomic.LoadInt32(&peak); n > p && !atomic.CompareAndSwapInt32(&peak, p, n); p = atomic.LoadInt32(&peak) {
			}
			fmt.Printf("worker %d working (%d inside)\n", w, n)
			time.Sleep(50 * time.Millisecond) // the work
			atomic.AddInt32(&inside, -1)
			exampleenv.Must("release", sem.Release(ctx))
		}(w)
	}
	wg.Wait()
	fmt.Printf("all %d workers done, at most %d at once (limit %d)\n", workers, peak, limit)
	if peak > limit {
		os.Exit(1)
	}
}
