// Package exampleenv sets up the example programs: a client of
// DFLOCKD_SERVERS ("host:port,..."), DFLOCKD_AUTH_TOKEN and DFLOCKD_TLS_CA, or,
// when DFLOCKD_SERVERS is unset, of the library's embedded test server.
package exampleenv

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	dflockd "github.com/dflockd/libdflockd/examples/go"
)

// AuthToken is the secret of the embedded server started for TLS + auth.
const AuthToken = "example-secret"

// TLSDir is the repository's test certificates (tests/fixtures/tls).
func TLSDir() string {
	if d := os.Getenv("DFLOCKD_TLS_FIXTURES"); d != "" {
		return d
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..", "tests", "fixtures", "tls")
}

// Setup returns a client and a cleanup function. With tlsAuth, the embedded
// server (if one is started) serves TLS with the test certificate and
// requires AuthToken. The embedded server (nil when DFLOCKD_SERVERS is set)
// is returned for its fault controls.
func Setup(tlsAuth bool, extra ...dflockd.Option) (*dflockd.Client, *dflockd.TestServer, func(), error) {
	servers := os.Getenv("DFLOCKD_SERVERS")
	token, ca := os.Getenv("DFLOCKD_AUTH_TOKEN"), os.Getenv("DFLOCKD_TLS_CA")
	var srv *dflockd.TestServer
	if servers == "" {
		return SetupEmbedded(tlsAuth, extra...)
	}
	opts := []dflockd.Option{dflockd.WithServers(servers)}
	if token != "" {
		opts = append(opts, dflockd.WithAuthToken(token))
	}
	if ca != "" {
		opts = append(opts, dflockd.WithTLSCAFile(ca))
	}
	c, err := dflockd.NewClient(append(opts, extra...)...)
	if err != nil {
		return nil, nil, nil, err
	}
	return c, srv, func() { _ = c.Close() }, nil
}

// SetupEmbedded always starts the embedded server (for examples that need
// its fault controls).
func SetupEmbedded(tlsAuth bool, extra ...dflockd.Option) (*dflockd.Client, *dflockd.TestServer, func(), error) {
	var so dflockd.TestServerOptions
	var opts []dflockd.Option
	if tlsAuth {
		so.AuthToken = AuthToken
		so.TLSCertFile = filepath.Join(TLSDir(), "server.pem")
		so.TLSKeyFile = filepath.Join(TLSDir(), "server.key")
		opts = append(opts, dflockd.WithAuthToken(AuthToken), dflockd.WithTLSCAFile(filepath.Join(TLSDir(), "ca.pem")))
	}
	srv, err := dflockd.StartTestServer(&so)
	if err != nil {
		return nil, nil, nil, err
	}
	fmt.Printf("started the embedded dflockd test server on %s\n", srv.Addr())
	c, err := dflockd.NewClient(append(append(opts, dflockd.WithServers(srv.Addr())), extra...)...)
	if err != nil {
		_ = srv.Close()
		return nil, nil, nil, err
	}
	return c, srv, func() { _ = c.Close(); _ = srv.Close() }, nil
}

// Must exits with the error when err is not nil.
func Must(what string, err error) {
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", what, err)
		os.Exit(1)
	}
}
