package dflockd

// #include <dflockd.h>
import "C"

import "unsafe"

// goDflockdLog is the C log callback installed by SetLogFunc. It may run on a
// library thread that Go did not create; cgo supports that. A panic in the
// handler must not unwind through C: it is recovered and the message dropped.
//
//export goDflockdLog
func goDflockdLog(_ unsafe.Pointer, level C.dflockd_log_level, message *C.char) {
	s := logFunc.Load()
	if s == nil {
		return
	}
	defer func() { _ = recover() }()
	s.f(LogLevel(level), C.GoString(message))
}
