package dflockd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Every program in cmd/ is built and run as a test; each exits non-zero when
// what it shows did not happen, and prints the line checked here.
func TestExamples(t *testing.T) {
	examples := []struct{ name, want string }{
		{"lock", "released"},
		{"semaphore", "all 6 workers done"},
		{"twophase", "waiter: granted"},
		{"tlsauth", "acquired over TLS with auth"},
		{"lostlease", "lease lost: stopping work; held = false"},
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	bin := t.TempDir()
	// The programs are built as this test binary was (dflockd_local or the
	// installed library through pkg-config).
	build := exec.Command(goTool, "build", "-tags", buildTags, "-o", bin+string(os.PathSeparator), "./cmd/...")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/...: %v\n%s", err, out)
	}
	for _, ex := range examples {
		ex := ex
		t.Run(ex.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, filepath.Join(bin, ex.name)).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", ex.name, err, out)
			}
			if !strings.Contains(string(out), ex.want) {
				t.Fatalf("%s: output lacks %q:\n%s", ex.name, ex.want, out)
			}
			t.Logf("%s:\n%s", ex.name, out)
		})
	}
}
