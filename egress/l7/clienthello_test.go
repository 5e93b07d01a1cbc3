package l7

import (
	"bytes"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// captureHello returns the bytes crypto/tls sends as its ClientHello for sni.
func captureHello(t testing.TB, sni string) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		tc := tls.Client(c, &tls.Config{ServerName: sni, InsecureSkipVerify: sni == "", NextProtos: []string{"h2", "http/1.1"}})
		_ = tc.Handshake()
		c.Close()
	}()
	var buf []byte
	tmp := make([]byte, 4096)
	for {
		s.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := s.Read(tmp)
		buf = append(buf, tmp[:n]...)
		if _, perr := ParseClientHello(buf); perr == nil || err != nil {
			return buf
		}
	}
}

// buildHello builds a ClientHello in records of at most recSize bytes with the
// given extensions (type, data).
func buildHello(recSize int, exts ...[]byte) []byte {
	var body []byte
	body = append(body, 3, 3)
	body = append(body, make([]byte, 32)...)
	body = append(body, 0)                // session id
	body = append(body, 0, 2, 0x13, 0x01) // one suite
	body = append(body, 1, 0)             // null compression
	var ex []byte
	for _, e := range exts {
		ex = append(ex, e...)
	}
	body = append(body, byte(len(ex)>>8), byte(len(ex)))
	body = append(body, ex...)
	msg := append([]byte{1, byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))}, body...)
	var out []byte
	for len(msg) > 0 {
		n := min(recSize, len(msg))
		out = append(out, 22, 3, 1, byte(n>>8), byte(n))
		out = append(out, msg[:n]...)
		msg = msg[n:]
	}
	return out
}

func ext(typ int, data []byte) []byte {
	return append([]byte{byte(typ >> 8), byte(typ), byte(len(data) >> 8), byte(len(data))}, data...)
}

func sniExt(names ...string) []byte {
	var list []byte
	for _, n := range names {
		list = append(list, 0, byte(len(n)>>8), byte(len(n)))
		list = append(list, n...)
	}
	return ext(0, append([]byte{byte(len(list) >> 8), byte(len(list))}, list...))
}

func TestParseClientHelloReal(t *testing.T) {
	raw := captureHello(t, "API.Example.com")
	h, err := ParseClientHello(raw)
	if err != nil {
		t.Fatal(err)
	}
	if h.ServerName != "api.example.com" || h.ECH || h.Len != len(raw) {
		t.Fatalf("got %+v (len %d)", h, len(raw))
	}
	// Every prefix is incomplete, never an error.
	for i := 0; i < len(raw); i++ {
		if _, err := ParseClientHello(raw[:i]); !errors.Is(err, ErrIncomplete) {
			t.Fatalf("prefix %d: %v", i, err)
		}
	}
	// No SNI (address or empty server name).
	h, err = ParseClientHello(captureHello(t, ""))
	if err != nil || h.ServerName != "" {
		t.Fatalf("no sni: %+v %v", h, err)
	}
}

func TestParseClientHelloCases(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    []byte
		sni     string
		ech     bool
		wantErr error // nil: success; errMalformed: any error
	}{
		{"one record", buildHello(1<<14, sniExt("a.example.com")), "a.example.com", false, nil},
		{"fragmented records", buildHello(7, sniExt("b.example.com"), ext(0x10, []byte{0, 3, 2, 'h', '2'})), "b.example.com", false, nil},
		{"ech", buildHello(100, sniExt("public.example.com"), ext(extECH, []byte{1, 2, 3})), "public.example.com", true, nil},
		{"no extensions", buildHello(100), "", false, nil},
		{"two names", buildHello(100, sniExt("a.com", "b.com")), "", false, errMalformed},
		{"ip literal", buildHello(100, sniExt("10.0.0.1")), "", false, errMalformed},
		{"trailing dot", buildHello(100, sniExt("a.com.")), "", false, errMalformed},
		{"bad byte", buildHello(100, sniExt("a\x00.com")), "", false, errMalformed},
		{"duplicate sni", buildHello(100, sniExt("a.com"), sniExt("a.com")), "", false, errMalformed},
		{"http", []byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), "", false, ErrNotTLS},
		{"huge", append([]byte{22, 3, 1, 0x40, 0}, make([]byte, 1<<14)...), "", false, ErrTooLarge},
		{"not client hello", []byte{22, 3, 1, 0, 4, 2, 0, 0, 0}, "", false, errMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ParseClientHello(tc.data)
			if tc.wantErr != nil {
				if err == nil || (tc.wantErr != errMalformed && !errors.Is(err, tc.wantErr)) || errors.Is(err, ErrIncomplete) {
					t.Fatalf("want %v, got %+v %v", tc.wantErr, h, err)
				}
				return
			}
			if err != nil || h.ServerName != tc.sni || h.ECH != tc.ech {
				t.Fatalf("got %+v %v", h, err)
			}
		})
	}
}

// TestReadClientHelloSplit writes the hello a few bytes at a time.
func TestReadClientHelloSplit(t *testing.T) {
	raw := captureHello(t, "split.example.com")
	c, s := net.Pipe()
	go func() {
		for i := 0; i < len(raw); i += 3 {
			c.Write(raw[i:min(i+3, len(raw))])
			time.Sleep(time.Millisecond)
		}
	}()
	h, got, err := ReadClientHello(s, 0, time.Now().Add(5*time.Second))
	if err != nil || h.ServerName != "split.example.com" || !bytes.Equal(got, raw) {
		t.Fatalf("%+v %v", h, err)
	}
}

func TestReadClientHelloDeadline(t *testing.T) {
	c, s := net.Pipe()
	defer c.Close()
	go c.Write([]byte{22, 3, 1}) // then silence
	start := time.Now()
	_, _, err := ReadClientHello(s, 0, time.Now().Add(100*time.Millisecond))
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || time.Since(start) > 2*time.Second {
		t.Fatalf("want timeout, got %v after %v", err, time.Since(start))
	}
}

func FuzzParseClientHello(f *testing.F) {
	f.Add(captureHello(f, "seed.example.com"))
	f.Add(buildHello(5, sniExt("frag.example.com")))
	f.Add(buildHello(100, sniExt("ech.example.com"), ext(extECH, []byte{0})))
	f.Add(buildHello(100))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseClientHello(data)
		if err != nil {
			if h != nil {
				t.Fatal("hello with error")
			}
			return
		}
		if h.Len <= 0 || h.Len > len(data) {
			t.Fatalf("Len %d of %d", h.Len, len(data))
		}
		if h.ServerName != "" {
			if _, err := checkHostName([]byte(h.ServerName)); err != nil {
				t.Fatalf("invalid name accepted: %q", h.ServerName)
			}
		}
		// A longer stream parses to the same hello.
		h2, err := ParseClientHello(append(data[:len(data):len(data)], 0x17, 3, 3, 0, 1, 0))
		if err != nil || *h2 != *h {
			t.Fatalf("suffix changed result: %+v %v", h2, err)
		}
	})
}
