package dflockd

/*
#include <stdint.h>
#include <dflockd.h>

// Implemented in Go (log_export.go).
extern void goDflockdLog(void *userdata, dflockd_log_level level, char *message);

static dflockd_status set_go_log(int32_t max_level) {
	return dflockd_set_log((dflockd_log_fn)goDflockdLog, NULL, max_level);
}
*/
import "C"

import (
	"strconv"
	"sync"
	"sync/atomic"
)

// LogLevel is the severity of a library log message (dflockd_log_level).
// The library promises what each level carries: LogDebug one message per
// request and reply, LogInfo each connection opened and closed, LogWarn every
// renewal retry, leader redirect, reconnect and deadline hit, LogError every
// lost lease (whether or not anyone watches Lost()). Messages never contain a
// token or the auth secret.
type LogLevel int

// The levels, most severe first; a handler installed for a level receives
// that level and every more severe one.
const (
	LogOff   LogLevel = C.DFLOCKD_LOG_LEVEL_OFF
	LogError LogLevel = C.DFLOCKD_LOG_LEVEL_ERROR
	LogWarn  LogLevel = C.DFLOCKD_LOG_LEVEL_WARN
	LogInfo  LogLevel = C.DFLOCKD_LOG_LEVEL_INFO
	LogDebug LogLevel = C.DFLOCKD_LOG_LEVEL_DEBUG
)

// String is the level's name: "OFF", "ERROR", "WARN", "INFO" or "DEBUG".
func (l LogLevel) String() string {
	switch l {
	case LogOff:
		return "OFF"
	case LogError:
		return "ERROR"
	case LogWarn:
		return "WARN"
	case LogInfo:
		return "INFO"
	case LogDebug:
		return "DEBUG"
	}
	return "LogLevel(" + strconv.Itoa(int(l)) + ")"
}

type logSink struct {
	f func(level LogLevel, msg string)
}

var (
	logMu   sync.Mutex              // serializes SetLogFunc
	logFunc atomic.Pointer[logSink] // read by goDflockdLog on any thread
)

// SetLogFunc installs f as the process-wide receiver of the library's log
// messages at maxLevel and every more severe level (LogOff or a nil f
// removes it; logging is off by default). SetLogger (Go ≥ 1.21) does the same
// for a *slog.Logger.
//
// f runs on whichever thread logs: the goroutine inside a dflockd call, or a
// library thread (renewals, lost leases), which cgo runs as a Go callback. It
// may run on several threads at once, must be quick (it delays the library
// thread that logged) and must not call into this package. Once SetLogFunc
// returns, the previous f is not running and will not be called again.
// Calling SetLogFunc from inside f deadlocks.
func SetLogFunc(maxLevel LogLevel, f func(level LogLevel, msg string)) error {
	if maxLevel < LogOff || maxLevel > LogDebug {
		return errorf(StatusInvalidArgument, "log level %d is not one of LogOff..LogDebug", int(maxLevel))
	}
	logMu.Lock()
	defer logMu.Unlock()
	if f == nil || maxLevel == LogOff {
		// Uninstall first: once dflockd_set_log returns, no call is running.
		err := check(C.dflockd_set_log(nil, nil, 0), nil)
		logFunc.Store(nil)
		return err
	}
	// Messages logged between the two steps go to the new f.
	logFunc.Store(&logSink{f: f})
	return check(C.set_go_log(C.int32_t(maxLevel)), nil)
}
