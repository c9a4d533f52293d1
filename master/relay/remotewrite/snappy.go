package remotewrite

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/golang/snappy"
	"github.com/klauspost/compress/s2"
)

// ErrTooLarge means a request decodes to more bytes than allowed.
var ErrTooLarge = errors.New("remotewrite: request too large")

// Decode decompresses a snappy block into dst (reused when large enough),
// refusing, before allocating, anything that decodes to more than max bytes.
func Decode(dst, src []byte, max int) ([]byte, error) {
	n, err := snappy.DecodedLen(src)
	if err != nil {
		return dst, fmt.Errorf("bad snappy: %w", err)
	}
	if n > max {
		return dst, fmt.Errorf("%w: decoded size %d exceeds %d bytes", ErrTooLarge, n, max)
	}
	if cap(dst) < n {
		dst = make([]byte, n)
	}
	out, err := snappy.Decode(dst[:cap(dst)], src)
	if err != nil {
		return dst, fmt.Errorf("bad snappy: %w", err)
	}
	return out, nil
}

// Encode returns the snappy block encoding of src, reusing dst's array. It
// uses the faster snappy-compatible encoder of klauspost/compress/s2;
// decoding stays with golang/snappy so that only strict snappy is accepted.
func Encode(dst, src []byte) []byte {
	return s2.EncodeSnappy(dst[:cap(dst)], src)
}

// Concat appends to dst[:0] one snappy block that decodes to the
// concatenation of what blocks decode to. Copy offsets in a snappy block are
// relative to its own output, so the blocks' bodies can be joined as they are
// under one new length header: no decompression, no recompression. Two
// concatenated WriteRequest encodings are one WriteRequest with both
// requests' series.
func Concat(dst []byte, blocks ...[]byte) ([]byte, error) {
	total := uint64(0)
	for _, b := range blocks {
		n, k := binary.Uvarint(b)
		if k <= 0 {
			return dst, errors.New("bad snappy: block header")
		}
		total += n
	}
	if total > 0xffffffff {
		return dst, errors.New("snappy: joined block too large")
	}
	dst = binary.AppendUvarint(dst[:0], total)
	for _, b := range blocks {
		_, k := binary.Uvarint(b)
		dst = append(dst, b[k:]...)
	}
	return dst, nil
}
