package telemetry

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestRequireBearer(t *testing.T) {
	const tok = "s3cret-token-0123456789"
	h := RequireBearer(tok, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("secret state")) }))
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"", 401},
		{"Bearer wrong-token-0123456789", 401},
		{"Basic " + tok, 401},
		{"Bearer " + tok[:len(tok)-1], 401},
		{"Bearer " + tok, 200},
	} {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/status", nil)
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		h.ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("Authorization %q: %d, want %d", tc.auth, rec.Code, tc.want)
		}
		if tc.want == 401 && (rec.Header().Get("WWW-Authenticate") == "" || rec.Body.String() == "secret state") {
			t.Errorf("Authorization %q: no challenge, or the body leaked", tc.auth)
		}
	}
}

func TestReadBearerToken(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		data string
		ok   bool
	}{
		{"abcdefghijklmnop\n", true},
		{"short\n", false},
		{"", false},
		{"abcdefgh ijklmnopq", false},
	} {
		p := filepath.Join(dir, "t")
		if err := os.WriteFile(p, []byte(tc.data), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadBearerToken(p); (err == nil) != tc.ok {
			t.Errorf("%q: err=%v, want ok=%v", tc.data, err, tc.ok)
		}
	}
}

func TestIsLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9464": true, "[::1]:9464": true, "localhost:9464": true, "127.1.2.3:1": true,
		":9464": false, "0.0.0.0:9464": false, "[::]:9464": false, "10.0.0.1:9464": false, "169.254.20.10:9464": false,
	} {
		got, err := IsLoopbackAddr(addr)
		if err != nil || got != want {
			t.Errorf("%s: %v, %v; want %v", addr, got, err, want)
		}
	}
	if _, err := IsLoopbackAddr("example.com:80"); err == nil {
		t.Error("a host name other than localhost must be an error")
	}
}
