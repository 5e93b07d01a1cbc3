package l7

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// TLS constants used by the parser.
const (
	recordHandshake   = 22
	handshakeClientHi = 1

	extServerName = 0x0000
	// extECH is encrypted_client_hello (RFC 9849); extECHOuter is
	// ech_outer_extensions, only valid inside the encrypted inner hello.
	extECH      = 0xfe0d
	extECHOuter = 0xfd00

	maxRecordLen = 1<<14 + 2048 // TLSCiphertext bound; plaintext hellos are ≤ 2^14
	// DefaultMaxHelloSize caps the bytes read while looking for a ClientHello.
	DefaultMaxHelloSize = 16 << 10
)

// Errors of the ClientHello parser. ErrIncomplete means "read more".
var (
	ErrIncomplete = errors.New("l7: incomplete ClientHello")
	ErrNotTLS     = errors.New("l7: not a TLS handshake")
	ErrTooLarge   = errors.New("l7: ClientHello too large")
)

// ClientHello is what the proxy needs of a TLS ClientHello.
type ClientHello struct {
	// ServerName is the host_name of the server_name extension, lower-cased
	// (empty when absent).
	ServerName string
	// ECH is true when the hello carries encrypted_client_hello: the real
	// server name is encrypted and ServerName is only the outer (public) name.
	ECH bool
	// Len is the number of stream bytes the hello's records took.
	Len int
}

// ParseClientHello parses the TLS records at the start of data (a TCP stream
// from its first byte) up to the end of the first handshake message, which
// must be a ClientHello. The message may be fragmented over several records
// and data may end anywhere: then ErrIncomplete is returned. It never reads
// beyond data and never allocates more than the message.
func ParseClientHello(data []byte) (*ClientHello, error) {
	return parseClientHello(data, DefaultMaxHelloSize)
}

func parseClientHello(data []byte, maxSize int) (*ClientHello, error) {
	var msg []byte // handshake bytes gathered from the records
	need := -1     // total handshake message length (header included), once known
	off := 0
	for {
		if len(data)-off < 5 {
			if len(data) > 0 && data[0] != recordHandshake {
				return nil, ErrNotTLS
			}
			return nil, ErrIncomplete
		}
		typ, major := data[off], data[off+1]
		rlen := int(data[off+3])<<8 | int(data[off+4])
		if typ != recordHandshake || major != 3 {
			return nil, ErrNotTLS
		}
		if rlen == 0 || rlen > maxRecordLen {
			return nil, fmt.Errorf("l7: bad TLS record length %d", rlen)
		}
		if off+5+rlen > maxSize {
			return nil, ErrTooLarge
		}
		if len(data)-off-5 < rlen {
			return nil, ErrIncomplete
		}
		msg = append(msg, data[off+5:off+5+rlen]...)
		off += 5 + rlen
		if need < 0 && len(msg) >= 4 {
			if msg[0] != handshakeClientHi {
				return nil, fmt.Errorf("l7: first handshake message is type %d, not ClientHello", msg[0])
			}
			need = 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if need > maxSize {
				return nil, ErrTooLarge
			}
		}
		if need >= 0 && len(msg) >= need {
			h, err := parseHelloBody(msg[4:need])
			if err != nil {
				return nil, err
			}
			h.Len = off
			return h, nil
		}
	}
}

// reader is a bounds-checked cursor; a failed read sets bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) bytes(n int) []byte {
	if r.bad || n < 0 || n > len(r.b) {
		r.bad = true
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() int {
	b := r.bytes(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) u16() int {
	b := r.bytes(2)
	if b == nil {
		return 0
	}
	return int(b[0])<<8 | int(b[1])
}

// vec reads a vector with an n-byte length prefix.
func (r *reader) vec(n int) reader {
	var l int
	if n == 1 {
		l = r.u8()
	} else {
		l = r.u16()
	}
	return reader{b: r.bytes(l), bad: r.bad}
}

var errMalformed = errors.New("l7: malformed ClientHello")

func parseHelloBody(body []byte) (*ClientHello, error) {
	r := reader{b: body}
	if v := r.u16(); v>>8 != 3 {
		return nil, errMalformed
	}
	r.bytes(32) // random
	if sid := r.vec(1); len(sid.b) > 32 {
		return nil, errMalformed
	}
	if cs := r.vec(2); len(cs.b) == 0 || len(cs.b)%2 != 0 {
		return nil, errMalformed
	}
	if cm := r.vec(1); len(cm.b) == 0 {
		return nil, errMalformed
	}
	if r.bad {
		return nil, errMalformed
	}
	h := &ClientHello{}
	if len(r.b) == 0 {
		return h, nil // no extensions (SSLv3-style hello): no SNI
	}
	exts := r.vec(2)
	if r.bad || len(r.b) != 0 {
		return nil, errMalformed
	}
	seen := map[int]bool{}
	for len(exts.b) > 0 {
		typ := exts.u16()
		data := exts.vec(2)
		if exts.bad {
			return nil, errMalformed
		}
		if seen[typ] {
			return nil, fmt.Errorf("l7: duplicate TLS extension %#04x", typ)
		}
		seen[typ] = true
		switch typ {
		case extECH, extECHOuter:
			h.ECH = true
		case extServerName:
			name, err := parseSNI(data)
			if err != nil {
				return nil, err
			}
			h.ServerName = name
		}
	}
	return h, nil
}

// parseSNI reads a server_name extension: exactly one host_name entry.
func parseSNI(r reader) (string, error) {
	list := r.vec(2)
	if r.bad || len(r.b) != 0 || len(list.b) == 0 {
		return "", errMalformed
	}
	var name string
	for len(list.b) > 0 {
		typ := list.u8()
		v := list.vec(2)
		if list.bad {
			return "", errMalformed
		}
		if typ != 0 {
			continue // unknown name types are skipped (RFC 6066 §3)
		}
		if name != "" {
			return "", errors.New("l7: several host_name entries in server_name")
		}
		n, err := checkHostName(v.b)
		if err != nil {
			return "", err
		}
		name = n
	}
	return name, nil
}

// checkHostName validates an SNI host_name: a DNS name in ASCII letters,
// digits, hyphens, underscores and dots, not an address literal, with no
// trailing dot (RFC 6066 §3). It is returned lower-cased.
func checkHostName(b []byte) (string, error) {
	if len(b) == 0 || len(b) > 253 {
		return "", errors.New("l7: bad SNI length")
	}
	label := 0
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			label++
			if label > 63 {
				return "", errors.New("l7: SNI label too long")
			}
		case c == '.':
			if label == 0 || i == len(b)-1 {
				return "", errors.New("l7: empty SNI label")
			}
			label = 0
		default:
			return "", fmt.Errorf("l7: invalid byte %#02x in SNI", c)
		}
	}
	s := strings.ToLower(string(b))
	if net.ParseIP(s) != nil {
		return "", errors.New("l7: SNI is an address literal")
	}
	return s, nil
}

// ReadClientHello reads from c until a whole ClientHello has arrived, at most
// maxSize bytes (≤0: DefaultMaxHelloSize), until deadline (zero: none). It
// returns the parsed hello and every byte read, to be replayed to the server.
// The read deadline of c is cleared on return.
func ReadClientHello(c net.Conn, maxSize int, deadline time.Time) (*ClientHello, []byte, error) {
	if maxSize <= 0 {
		maxSize = DefaultMaxHelloSize
	}
	if err := c.SetReadDeadline(deadline); err != nil {
		return nil, nil, err
	}
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 0, 2048)
	for {
		if len(buf) == cap(buf) {
			nb := make([]byte, len(buf), min(2*cap(buf), maxSize+5))
			copy(nb, buf)
			buf = nb
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if n > 0 {
			h, perr := parseClientHello(buf, maxSize)
			if perr == nil {
				return h, buf, nil
			}
			if !errors.Is(perr, ErrIncomplete) {
				return nil, buf, perr
			}
			if len(buf) >= maxSize+5 {
				return nil, buf, ErrTooLarge
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, buf, err
		}
	}
}
