package dflockd

// #include <dflockd.h>
import "C"

import "fmt"

// Status is a libdflockd status code (dflockd_status). Values are stable.
type Status int

// The statuses of dflockd.h, one per failure kind.
const (
	StatusOK              Status = C.DFLOCKD_STATUS_OK
	StatusNullParameter   Status = C.DFLOCKD_STATUS_NULL_PARAMETER
	StatusInvalidArgument Status = C.DFLOCKD_STATUS_INVALID_ARGUMENT
	StatusInvalidUTF8     Status = C.DFLOCKD_STATUS_INVALID_UTF8
	StatusBufferTooSmall  Status = C.DFLOCKD_STATUS_BUFFER_TOO_SMALL
	StatusPanic           Status = C.DFLOCKD_STATUS_PANIC
	StatusUnsupported     Status = C.DFLOCKD_STATUS_UNSUPPORTED
	StatusTimeout         Status = C.DFLOCKD_STATUS_TIMEOUT
	StatusServerError     Status = C.DFLOCKD_STATUS_SERVER_ERROR
	StatusAuth            Status = C.DFLOCKD_STATUS_AUTH
	StatusMaxLocks        Status = C.DFLOCKD_STATUS_MAX_LOCKS
	StatusMaxWaiters      Status = C.DFLOCKD_STATUS_MAX_WAITERS
	StatusLimitMismatch   Status = C.DFLOCKD_STATUS_LIMIT_MISMATCH
	StatusNotEnqueued     Status = C.DFLOCKD_STATUS_NOT_ENQUEUED
	StatusAlreadyEnqueued Status = C.DFLOCKD_STATUS_ALREADY_ENQUEUED
	StatusLeaseExpired    Status = C.DFLOCKD_STATUS_LEASE_EXPIRED
	StatusDraining        Status = C.DFLOCKD_STATUS_DRAINING
	StatusNotLeader       Status = C.DFLOCKD_STATUS_NOT_LEADER
	StatusProtocol        Status = C.DFLOCKD_STATUS_PROTOCOL
	StatusIO              Status = C.DFLOCKD_STATUS_IO
	StatusDeadline        Status = C.DFLOCKD_STATUS_DEADLINE
	StatusTLS             Status = C.DFLOCKD_STATUS_TLS
	StatusCancelled       Status = C.DFLOCKD_STATUS_CANCELLED
	StatusLeaseLost       Status = C.DFLOCKD_STATUS_LEASE_LOST
	StatusNotHeld         Status = C.DFLOCKD_STATUS_NOT_HELD
	StatusClosed          Status = C.DFLOCKD_STATUS_CLOSED
	StatusForked          Status = C.DFLOCKD_STATUS_FORKED
)

// String is the C name of the status, e.g. "DFLOCKD_STATUS_TIMEOUT".
func (s Status) String() string {
	return C.GoString(C.dflockd_status_str(C.int32_t(s)))
}

// Error is a failed libdflockd call: its status, the library's message and,
// for StatusNotLeader, the leader the server named. Compare with errors.Is
// against the sentinels below: errors.Is(err, dflockd.ErrTimeout).
type Error struct {
	Status   Status // the C status (never StatusOK)
	Message  string // the library's message ("" for a sentinel)
	Leader   string // StatusNotLeader only; "" when the server named none
	cause    error  // e.g. context.Canceled for a cancelled Acquire(ctx)
	sentinel bool
}

// Error is "dflockd: " followed by the message (or, without one, the status).
func (e *Error) Error() string {
	if e.sentinel || e.Message == "" {
		return "dflockd: " + e.Status.String()
	}
	return "dflockd: " + e.Message
}

// Is makes errors.Is(err, ErrX) match every error of ErrX's status.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.sentinel && t.Status == e.Status
}

// Unwrap returns the cause outside the library, if any: ctx.Err() when a
// context cancelled the call, so errors.Is(err, context.Canceled) holds too.
func (e *Error) Unwrap() error { return e.cause }

func sentinel(s Status) *Error { return &Error{Status: s, sentinel: true} }

// Sentinels, one per status: errors.Is(err, ErrTimeout).
var (
	ErrNullParameter   = sentinel(StatusNullParameter)
	ErrInvalidArgument = sentinel(StatusInvalidArgument)
	ErrInvalidUTF8     = sentinel(StatusInvalidUTF8)
	ErrBufferTooSmall  = sentinel(StatusBufferTooSmall)
	ErrPanic           = sentinel(StatusPanic)
	ErrUnsupported     = sentinel(StatusUnsupported)
	ErrTimeout         = sentinel(StatusTimeout)
	ErrServerError     = sentinel(StatusServerError)
	ErrAuth            = sentinel(StatusAuth)
	ErrMaxLocks        = sentinel(StatusMaxLocks)
	ErrMaxWaiters      = sentinel(StatusMaxWaiters)
	ErrLimitMismatch   = sentinel(StatusLimitMismatch)
	ErrNotEnqueued     = sentinel(StatusNotEnqueued)
	ErrAlreadyEnqueued = sentinel(StatusAlreadyEnqueued)
	ErrLeaseExpired    = sentinel(StatusLeaseExpired)
	ErrDraining        = sentinel(StatusDraining)
	ErrNotLeader       = sentinel(StatusNotLeader)
	ErrProtocol        = sentinel(StatusProtocol)
	ErrIO              = sentinel(StatusIO)
	ErrDeadline        = sentinel(StatusDeadline)
	ErrTLS             = sentinel(StatusTLS)
	ErrCancelled       = sentinel(StatusCancelled)
	ErrLeaseLost       = sentinel(StatusLeaseLost)
	ErrNotHeld         = sentinel(StatusNotHeld)
	ErrClosed          = sentinel(StatusClosed)
	// ErrForked: the handle was made before fork(); make a new client in the child.
	ErrForked = sentinel(StatusForked)
)

// check turns a status and its optional C error object into a Go error and
// frees the object. The object is the only source of detail: no
// thread-local state is read.
func check(st C.dflockd_status, cerr *C.dflockd_error) error {
	if st == C.DFLOCKD_STATUS_OK {
		if cerr != nil {
			C.dflockd_error_free(cerr)
		}
		return nil
	}
	e := &Error{Status: Status(st)}
	if cerr != nil {
		e.Message = C.GoString(C.dflockd_error_message(cerr))
		if l := C.dflockd_error_leader(cerr); l != nil {
			e.Leader = C.GoString(l)
		}
		C.dflockd_error_free(cerr)
	}
	return e
}

// errorf makes an error detected on the Go side.
func errorf(s Status, format string, args ...interface{}) *Error {
	return &Error{Status: s, Message: fmt.Sprintf(format, args...)}
}
