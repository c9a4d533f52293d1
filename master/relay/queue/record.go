package queue

import (
	"encoding/binary"
	"hash/crc32"
	"time"
)

const (
	headerSize = 32
	magic      = 0x31594c52 // "RLY1"
	// MaxRecordBytes bounds one payload, so a corrupt length never makes a
	// reader allocate more.
	MaxRecordBytes = 256 << 20
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Record is one entry of the log.
type Record struct {
	Shard   int
	Samples int
	// Flags are the caller's, kept with the record (the relay says which
	// remote-write version Data holds); records written before flags
	// existed read as 0.
	Flags uint16
	Time  time.Time // when it was appended (millisecond precision)
	Data  []byte
}

// Position is a place in the log: the byte offset of a record in a segment.
type Position struct {
	Segment uint64
	Offset  int64
}

// Less orders positions.
func (p Position) Less(q Position) bool {
	return p.Segment < q.Segment || p.Segment == q.Segment && p.Offset < q.Offset
}

type header struct {
	length  uint32
	crc     uint32
	shard   uint16
	flags   uint16
	samples uint32
	unixMS  int64
}

// appendRecord appends the framed record to dst.
func appendRecord(dst []byte, shard int, flags uint16, samples int, unixMS int64, data []byte) []byte {
	var h [headerSize]byte
	binary.LittleEndian.PutUint32(h[0:], magic)
	binary.LittleEndian.PutUint32(h[4:], uint32(len(data)))
	binary.LittleEndian.PutUint16(h[12:], uint16(shard))
	binary.LittleEndian.PutUint16(h[14:], flags)
	binary.LittleEndian.PutUint32(h[16:], uint32(samples))
	binary.LittleEndian.PutUint64(h[20:], uint64(unixMS))
	crc := crc32.Update(crc32.Checksum(h[12:28], castagnoli), castagnoli, data)
	binary.LittleEndian.PutUint32(h[8:], crc)
	binary.LittleEndian.PutUint32(h[28:], crc32.Checksum(h[:28], castagnoli))
	dst = append(dst, h[:]...)
	return append(dst, data...)
}

// parseHeader reports whether b starts with a valid header (its own CRC
// checked, so a reader may skip the payload of another shard's record).
func parseHeader(b []byte) (header, bool) {
	if len(b) < headerSize || binary.LittleEndian.Uint32(b) != magic ||
		crc32.Checksum(b[:28], castagnoli) != binary.LittleEndian.Uint32(b[28:]) {
		return header{}, false
	}
	h := header{
		length:  binary.LittleEndian.Uint32(b[4:]),
		crc:     binary.LittleEndian.Uint32(b[8:]),
		shard:   binary.LittleEndian.Uint16(b[12:]),
		flags:   binary.LittleEndian.Uint16(b[14:]),
		samples: binary.LittleEndian.Uint32(b[16:]),
		unixMS:  int64(binary.LittleEndian.Uint64(b[20:])),
	}
	return h, h.length <= MaxRecordBytes
}

func (h header) valid(raw, data []byte) bool {
	return crc32.Update(crc32.Checksum(raw[12:28], castagnoli), castagnoli, data) == h.crc
}
