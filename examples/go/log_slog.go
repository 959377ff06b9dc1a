//go:build go1.21

package dflockd

import (
	"context"
	"log/slog"
)

// SlogLevel is the slog level of a library level: LogError → LevelError,
// LogWarn → LevelWarn, LogInfo → LevelInfo, LogDebug → LevelDebug.
func (l LogLevel) SlogLevel() slog.Level {
	switch l {
	case LogError:
		return slog.LevelError
	case LogWarn:
		return slog.LevelWarn
	case LogInfo:
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

// SetLogger sends the library's log messages to logger (nil: logging off),
// each at its SlogLevel with the attribute component=libdflockd. The library
// is asked only for the levels logger is enabled for at the time of the call
// (call SetLogger again after changing the handler's level). The handler runs
// on library threads too: see SetLogFunc for the rules (slog's handlers are
// safe for concurrent use; keep the handler fast).
func SetLogger(logger *slog.Logger) error {
	if logger == nil {
		return SetLogFunc(LogOff, nil)
	}
	ctx := context.Background()
	max := LogOff
	for _, l := range []LogLevel{LogError, LogWarn, LogInfo, LogDebug} {
		if logger.Enabled(ctx, l.SlogLevel()) {
			max = l
		}
	}
	if max == LogOff {
		return SetLogFunc(LogOff, nil)
	}
	return SetLogFunc(max, func(level LogLevel, msg string) {
		logger.Log(ctx, level.SlogLevel(), msg, slog.String("component", "libdflockd"))
	})
}
