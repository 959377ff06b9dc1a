// TLS + auth: the embedded server (or DFLOCKD_SERVERS with DFLOCKD_TLS_CA and
// DFLOCKD_AUTH_TOKEN) over TLS with a shared secret; a wrong secret is
// refused with dflockd.ErrAuth.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	dflockd "github.com/dflockd/libdflockd/examples/go"
	"github.com/dflockd/libdflockd/examples/go/internal/exampleenv"
)

func main() {
	client, srv, cleanup, err := exampleenv.Setup(true)
	exampleenv.Must("setup", err)
	defer cleanup()

	lock, err := client.Lock("go-example-tls")
	exampleenv.Must("lock handle", err)
	defer lock.Close(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	exampleenv.Must("acquire over TLS", lock.Acquire(ctx))
	fence, _ := lock.Fence()
	fmt.Printf("acquired over TLS with auth, fence %d\n", fence)
	exampleenv.Must("release", lock.Release(ctx))

	if srv == nil {
		return // an external server: its wrong-token behaviour is not ours to show
	}
	bad, err := dflockd.NewClient(dflockd.WithServers(srv.Addr()), dflockd.WithAuthToken("wrong"),
		dflockd.WithTLSCAFile(filepath.Join(exampleenv.TLSDir(), "ca.pem")))
	exampleenv.Must("client", err)
	defer bad.Close()
	l, err := bad.Lock("go-example-tls")
	exampleenv.Must("lock handle", err)
	defer l.Close(context.Background())
	_, err = l.TryAcquire(ctx)
	fmt.Printf("wrong token: %v (errors.Is ErrAuth: %v)\n", err, errors.Is(err, dflockd.ErrAuth))
	if !errors.Is(err, dflockd.ErrAuth) {
		os.Exit(1)
	}
}
