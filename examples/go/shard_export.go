package dflockd

// #include <stdint.h>
// #include <stddef.h>
import "C"

import (
	"runtime/cgo"
	"unsafe"
)

// goDflockdShard is the C shard callback for WithShard. The C API calls it
// on the thread of the cgo call creating a lease (a Go thread), so calling
// into Go is safe here. A panic must not unwind through C: it is recovered
// and reported as an out-of-range index, which the library turns into
// ErrInvalidArgument.
//
//export goDflockdShard
func goDflockdShard(userdata unsafe.Pointer, key *C.char, keyLen C.size_t, n C.size_t) (idx C.size_t) {
	defer func() {
		if recover() != nil {
			idx = n
		}
	}()
	f := cgo.Handle(*(*C.uintptr_t)(userdata)).Value().(func(string, int) int)
	i := f(C.GoStringN(key, C.int(keyLen)), int(n))
	if i < 0 {
		return n
	}
	return C.size_t(i)
}
