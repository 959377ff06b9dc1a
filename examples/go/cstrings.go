package dflockd

// #include <dflockd.h>
import "C"

import "unsafe"

// cstr passes a Go string to C as pointer + length (the C API needs no NUL
// and checks UTF-8 itself, so invalid UTF-8 in a Go string is reported as
// ErrInvalidUTF8 rather than mangled). The bytes are copied into Go memory
// that cgo keeps alive for the duration of the call; an empty string gets a
// valid pointer, so C sees an empty string rather than NULL.
func cstr(s string) (*C.char, C.size_t) {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return (*C.char)(unsafe.Pointer(&b[0])), C.size_t(len(s))
}

// cbytes is cstr for byte slices (PEM data).
func cbytes(b []byte) (*C.uint8_t, C.size_t) {
	c := make([]byte, len(b)+1)
	copy(c, b)
	return (*C.uint8_t)(unsafe.Pointer(&c[0])), C.size_t(len(b))
}

// outString reads a C output string (buf, cap, out_len convention), growing
// the buffer when the library reports DFLOCKD_STATUS_BUFFER_TOO_SMALL.
func outString(call func(buf *C.char, cap C.size_t, outLen *C.size_t, errp **C.dflockd_error) C.dflockd_status) (string, error) {
	size := 64
	for attempt := 0; ; attempt++ {
		buf := make([]byte, size)
		var n C.size_t
		var cerr *C.dflockd_error
		st := call((*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n, &cerr)
		if st == C.DFLOCKD_STATUS_BUFFER_TOO_SMALL && attempt < 4 && int(n) > size {
			if cerr != nil {
				C.dflockd_error_free(cerr)
			}
			size = int(n) + 256 // stats may grow between the two calls
			continue
		}
		if err := check(st, cerr); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
}
