//go:build dflockd_bench

package dflockd

// Acquire+Release pairs/s through this package (evented: each call starts
// on the library's engine and the goroutine waits for its event on the
// client's completion queue) beside the same pairs through the C API's
// blocking calls (one OS thread per blocked goroutine), at 1 and 10
// goroutines, each goroutine its own key. The two alternate in ROUNDS short
// slices in one process, so both see the same machine drift; compare within
// a run. `make bench-go` runs it against a dflockd-testserver process
// (DFLOCKD_SERVERS); prints GOBENCH lines and a table. No timing is asserted.

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	benchRounds = 6
	benchSlice  = 500 * time.Millisecond
)

// benchSlicePairs runs pair in n goroutines for one slice: pairs/s.
func benchSlicePairs(t *testing.T, n int, pair func(i int) error) float64 {
	var stop int32
	var count int64
	var wg sync.WaitGroup
	errs := make(chan error, n)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for atomic.LoadInt32(&stop) == 0 {
				if err := pair(i); err != nil {
					errs <- err
					return
				}
				atomic.AddInt64(&count, 1)
			}
		}(i)
	}
	time.Sleep(benchSlice)
	atomic.StoreInt32(&stop, 1)
	wg.Wait()
	secs := time.Since(start).Seconds()
	select {
	case err := <-errs:
		t.Fatalf("pair: %v", err)
	default:
	}
	return float64(count) / secs
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func TestBenchPairs(t *testing.T) {
	if external == "" {
		t.Skip("DFLOCKD_SERVERS not set (make bench-go starts a server)")
	}
	c := newClient(t, WithServers(strings.Split(external, ",")...))
	ctx := context.Background()
	prefix := fmt.Sprintf("gobench-%d", time.Now().UnixNano())
	fmt.Println("## Go: Acquire+Release pairs/s, this package (evented) beside the C API's blocking calls, alternating slices")
	fmt.Printf("%10s %14s %14s %8s\n", "goroutines", "Go binding", "C blocking", "ratio")
	for _, n := range []int{1, 10} {
		leases := make([]*Lease, n)
		blocking := make([]*cBlockingLock, n)
		for i := range leases {
			var err error
			if leases[i], err = c.Lock(fmt.Sprintf("%s-go-%d-%d", prefix, n, i)); err != nil {
				t.Fatal(err)
			}
			if blocking[i], err = newCBlockingLock(c, fmt.Sprintf("%s-c-%d-%d", prefix, n, i)); err != nil {
				t.Fatal(err)
			}
		}
		goPair := func(i int) error {
			if err := leases[i].Acquire(ctx); err != nil {
				return err
			}
			return leases[i].Release(ctx)
		}
		cPair := func(i int) error { return blocking[i].pair() }
		if only := os.Getenv("GOBENCH_ONLY"); only != "" {
			// Profiling aid: one side alone for 3 s (GOBENCH_ONLY=go|c).
			f := goPair
			if only == "c" {
				f = cPair
			}
			for r := 0; r < 6; r++ {
				fmt.Printf("GOBENCH_ONLY %s goroutines=%d pairs_per_s=%.0f\n", only, n, benchSlicePairs(t, n, f))
			}
			continue
		}
		// Warm up both (connections pooled, threads started).
		benchSlicePairs(t, n, goPair)
		benchSlicePairs(t, n, cPair)
		var g, cb, ratios []float64
		for r := 0; r < benchRounds; r++ {
			a := benchSlicePairs(t, n, goPair)
			b := benchSlicePairs(t, n, cPair)
			g, cb, ratios = append(g, a), append(cb, b), append(ratios, a/b)
			fmt.Fprintf(os.Stdout, "GOBENCH goroutines=%d round=%d go=%.0f c_blocking=%.0f\n", n, r, a, b)
		}
		fmt.Printf("%10d %14.0f %14.0f %8.3f\n", n, median(g), median(cb), median(ratios))
		fmt.Printf("GOBENCH_RATIO goroutines=%d go=%.0f c_blocking=%.0f ratio=%.4f\n", n, median(g), median(cb), median(ratios))
		for i := range blocking {
			blocking[i].free()
		}
	}
}
