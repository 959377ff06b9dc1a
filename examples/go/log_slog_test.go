//go:build go1.21

package dflockd

import (
	"context"
	"log/slog"
	"sync"
	"testing"
)

// slogRecorder is a slog.Handler that keeps records at or above its level.
type slogRecorder struct {
	level slog.Level
	mu    *sync.Mutex
	recs  *[]slog.Record
}

func (h slogRecorder) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h slogRecorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	*h.recs = append(*h.recs, r.Clone())
	return nil
}
func (h slogRecorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h slogRecorder) WithGroup(string) slog.Handler      { return h }

func TestSetLoggerMapsLevels(t *testing.T) {
	for l, want := range map[LogLevel]slog.Level{
		LogError: slog.LevelError, LogWarn: slog.LevelWarn, LogInfo: slog.LevelInfo, LogDebug: slog.LevelDebug,
	} {
		if got := l.SlogLevel(); got != want {
			t.Errorf("%v.SlogLevel() = %v, want %v", l, got, want)
		}
	}
	c := envClient(t)
	var mu sync.Mutex
	var recs []slog.Record
	run := func(level slog.Level) []slog.Record {
		mu.Lock()
		recs = nil
		mu.Unlock()
		if err := SetLogger(slog.New(slogRecorder{level, &mu, &recs})); err != nil {
			t.Fatal(err)
		}
		if ok, err := newLock(t, c, uniqueKey(t)).TryAcquire(bg); !ok || err != nil {
			t.Fatalf("TryAcquire = %v, %v", ok, err)
		}
		if err := SetLogger(nil); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return append([]slog.Record(nil), recs...)
	}
	debug := run(slog.LevelDebug)
	if len(debug) == 0 {
		t.Fatal("a DEBUG slog logger received nothing for a TryAcquire")
	}
	for _, r := range debug {
		found := false
		r.Attrs(func(a slog.Attr) bool {
			found = found || (a.Key == "component" && a.Value.String() == "libdflockd")
			return true
		})
		if !found {
			t.Errorf("record %q lacks component=libdflockd", r.Message)
		}
	}
	if warn := run(slog.LevelWarn); len(warn) != 0 {
		t.Errorf("a WARN slog logger received %d records for a healthy TryAcquire (first: %s %q)", len(warn), warn[0].Level, warn[0].Message)
	}
}
