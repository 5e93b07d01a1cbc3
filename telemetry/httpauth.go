package telemetry

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
)

// MinTokenLen is the shortest bearer token ReadBearerToken accepts.
const MinTokenLen = 16

// ReadBearerToken reads a bearer token from a file (surrounding whitespace
// and a trailing newline are ignored). The token must be at least
// MinTokenLen bytes of printable ASCII without spaces.
func ReadBearerToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("bearer token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < MinTokenLen {
		return "", fmt.Errorf("bearer token in %s: %d bytes, want at least %d", path, len(tok), MinTokenLen)
	}
	for _, c := range []byte(tok) {
		if c <= ' ' || c > '~' {
			return "", fmt.Errorf("bearer token in %s: only printable ASCII without spaces", path)
		}
	}
	return tok, nil
}

// RequireBearer serves next only to requests carrying "Authorization: Bearer
// token" (compared in constant time); others get 401 with a WWW-Authenticate
// challenge and nothing of next.
func RequireBearer(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(strings.TrimSpace(got)))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="egressd"`)
			http.Error(w, "unauthorized: this endpoint needs Authorization: Bearer <token of --http-token-file>", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// IsLoopbackAddr reports whether a listen address host:port binds only
// loopback: a loopback IP or "localhost". An empty host, 0.0.0.0, :: or any
// other address is reachable from elsewhere.
func IsLoopbackAddr(hostport string) (bool, error) {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false, err
	}
	if host == "localhost" {
		return true, nil
	}
	if host == "" {
		return false, nil
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return false, errors.New("host is neither an IP address nor localhost")
	}
	return a.Unmap().IsLoopback(), nil
}
