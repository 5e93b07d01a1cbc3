package telemetry

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestHTTPListenerSharedDuringHandover: a second listener binds the address of
// a live one (the successor during a handover) and, once the first closes,
// serves every request alone.
func TestHTTPListenerSharedDuringHandover(t *testing.T) {
	old, err := ListenHTTP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := old.Addr().String()
	next, err := ListenHTTP(addr)
	if err != nil {
		old.Close()
		t.Fatalf("the successor cannot bind %s while the old listener is open: %v", addr, err)
	}
	defer next.Close()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("next")) }))
	srv.Listener.Close()
	srv.Listener = next
	srv.Start()
	defer srv.Close()
	old.Close() // the old process goes away
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	for i := 0; i < 20; i++ {
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("request %d after the old listener closed: %v", i, err)
		}
		resp.Body.Close()
	}
}
