package dflockd

import (
	"context"
	"errors"
	"io"
	"testing"
)

// Client and TestServer end with Close like any io.Closer; Lease.Close takes
// a context (it may release over the network). The rules are the same on
// each: a second Close returns nil and later calls match ErrClosed.
var (
	_ io.Closer = (*Client)(nil)
	_ io.Closer = (*TestServer)(nil)
	_           = (*Lease).Close // func(*Lease, context.Context) error
)

func TestCloseSameRulesOnEveryType(t *testing.T) {
	needEmbedded(t)
	bg := context.Background()
	srv, err := StartTestServer(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewClient(WithServers(srv.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	l, err := c.Lock(uniqueKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Acquire(bg); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ { // the second round checks idempotence
		if err := l.Close(bg); err != nil {
			t.Fatalf("Lease.Close #%d: %v", i+1, err)
		}
		if err := c.Close(); err != nil {
			t.Fatalf("Client.Close #%d: %v", i+1, err)
		}
		if err := srv.Close(); err != nil {
			t.Fatalf("TestServer.Close #%d: %v", i+1, err)
		}
	}
	if err := l.Release(bg); !errors.Is(err, ErrClosed) {
		t.Errorf("Lease.Release after Close = %v, want ErrClosed", err)
	}
	if _, err := c.ServerFor("k"); !errors.Is(err, ErrClosed) {
		t.Errorf("Client.ServerFor after Close = %v, want ErrClosed", err)
	}
	if err := srv.Pause(); !errors.Is(err, ErrClosed) {
		t.Errorf("TestServer.Pause after Close = %v, want ErrClosed", err)
	}
}
