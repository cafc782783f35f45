package wire

import (
	"runtime"

	"github.com/klauspost/compress/zstd"
)

// Compression (FlagCompressed): the payload of a frame, and only the
// payload, is replaced by one zstd frame; the 2-byte header stays readable
// so a receiver can route and reject before decompressing. A decompressed
// frame (header included) is bounded by MaxFrameSize, like any frame.
//
// One encoder and one decoder serve the whole process: EncodeAll and
// DecodeAll are safe for concurrent use and keep their state in internal
// pools, so after warm-up neither allocates when dst has capacity.
var (
	zenc *zstd.Encoder
	zdec *zstd.Decoder
)

func init() {
	var err error
	// Concurrency is the number of pooled encoder states, i.e. how many
	// EncodeAll calls run in parallel; with 1 every goroutine of the gateway
	// would queue behind a single encoder. GOMAXPROCS states of the fastest
	// level with lower memory cost a few hundred KiB each.
	zenc, err = zstd.NewWriter(nil,
		zstd.WithEncoderLevel(zstd.SpeedFastest),
		zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)),
		zstd.WithLowerEncoderMem(true),
	)
	if err != nil {
		panic("wire: zstd encoder: " + err.Error())
	}
	// WithDecoderMaxMemory bounds both the output of one DecodeAll call and
	// the window size a frame may declare, so a decompression bomb fails
	// after at most one block instead of exhausting memory. The bound is
	// MaxFrameSize rather than MaxFrameSize-HeaderLen so that a frame
	// declaring the power-of-two window 64 KiB (what one-shot encoders
	// emit for payloads of 32..64 KiB without single-segment mode) is
	// accepted; the exact payload bound is checked after decoding.
	zdec, err = zstd.NewReader(nil,
		zstd.WithDecoderConcurrency(0), // GOMAXPROCS parallel DecodeAll calls
		zstd.WithDecoderMaxMemory(MaxFrameSize),
	)
	if err != nil {
		panic("wire: zstd decoder: " + err.Error())
	}
}

// Compress appends frame to dst with its payload zstd-compressed and
// FlagCompressed set; the type byte and the other flags are kept. The frame
// is appended unchanged when it is shorter than a header, already
// compressed, has a payload shorter than CompressMinBytes, or when
// compression would not make it smaller. dst and frame must not overlap.
//
// Compress does not know whether the peer negotiated CapZstd; only call it
// for peers that did.
func Compress(dst, frame []byte) []byte {
	if len(frame) < HeaderLen+CompressMinBytes || Flags(frame[1])&FlagCompressed != 0 {
		return append(dst, frame...)
	}
	start := len(dst)
	payload := frame[HeaderLen:]
	dst = append(dst, frame[0], frame[1]|byte(FlagCompressed))
	dst = zenc.EncodeAll(payload, dst)
	if len(dst)-start-HeaderLen >= len(payload) {
		// Incompressible (random bytes, ciphertext): the plain frame is
		// smaller and costs the receiver nothing to read.
		return append(dst[:start], frame...)
	}
	return dst
}

// Decompress appends frame to dst with its payload decompressed and
// FlagCompressed cleared. A frame without FlagCompressed is appended
// unchanged. The header is checked as by ParseHeader (and its error
// returned); a compressed payload that is empty, not valid zstd, or that
// decompresses to a frame larger than MaxFrameSize fails with
// CodeBadCompression. On error dst is returned with its original length.
func Decompress(dst, frame []byte) ([]byte, error) {
	_, f, payload, err := ParseHeader(frame)
	if err != nil {
		return dst, err
	}
	if f&FlagCompressed == 0 {
		return append(dst, frame...), nil
	}
	start := len(dst)
	dst = append(dst, frame[0], frame[1]&^byte(FlagCompressed))
	out, err := decompressPayload(dst, payload)
	if err != nil {
		return dst[:start], err
	}
	return out, nil
}

// decompressPayload appends the decompression of a FlagCompressed payload
// to dst, failing if it would exceed MaxFrameSize-HeaderLen bytes. On
// error the result has dst's length (possibly with more capacity).
func decompressPayload(dst, payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		// DecodeAll accepts empty input as zero frames; the protocol
		// requires exactly one.
		return dst, errZstdEmpty
	}
	start := len(dst)
	out, err := zdec.DecodeAll(payload, dst)
	if err != nil {
		// out may be nil or a reallocation here; dst is intact up to start.
		if err == zstd.ErrDecoderSizeExceeded || err == zstd.ErrWindowSizeExceeded {
			return dst, errZstdTooLarge
		}
		return dst, errZstdInvalid
	}
	if len(out)-start > MaxFrameSize-HeaderLen {
		return out[:start], errZstdTooLarge
	}
	return out, nil
}
