package dnsproxy

import (
	"encoding/json"
	"maps"
	"reflect"
	"testing"
)

// TestStatsCountersMatchJSON: Counters holds every field of Stats, under the
// key and with the value that encoding Stats as JSON gives (the /status
// "resolver" object before it was a map), so no counter is lost or renamed.
func TestStatsCountersMatchJSON(t *testing.T) {
	var s Stats
	v := reflect.ValueOf(&s).Elem()
	for i := range v.NumField() {
		switch f := v.Field(i); f.Kind() {
		case reflect.Uint64:
			f.SetUint(uint64(1000 + i))
		case reflect.Int:
			f.SetInt(int64(1000 + i))
		default:
			t.Fatalf("Stats.%s is a %s: Counters takes only integers", v.Type().Field(i).Name, f.Kind())
		}
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]uint64
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	got := s.Counters()
	if len(got) != v.NumField() || !maps.Equal(got, want) {
		t.Fatalf("Counters() = %v\nwant (from JSON) %v", got, want)
	}
	if got["Queries"] != 1000 {
		t.Errorf("Queries = %d, want 1000", got["Queries"])
	}
	s.Inflight = -1
	if n := s.Counters()["Inflight"]; n != 0 {
		t.Errorf("a negative gauge gives %d, want 0", n)
	}
}
